"""Running a round's cases and judging them against their ODE references.

- :func:`run_flame`: one OpenFOAM flame of ``couplers/openfoam/flame_runs.py`` (deepkin or ODE
  chemistry), cached as ``result.json`` in its case folder; a deepkin run that OpenFOAM stops
  (the surrogate drove the case somewhere the solver cannot go) is a result too: ``failed``.
- :func:`run_zero_d`: the 0D rollouts of a grid (``kinetics.validation.validate``), the surrogate's own
  states written as a states file when asked.
- :func:`flame_states`: every cell state a flame run wrote, as a states file.
- :func:`flame_figures`, :func:`zero_d_figures`: a run against its reference, and
  :func:`normalised_errors`: each figure's error over its target (≤ 1 meets it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from couplers.openfoam.foam import FoamError
from mechanisms.atomic_io import atomic_write_text
from mechanisms.errors import InputError
from mechanisms.processes import each_in_processes
from refinement.config import FlameCase, Targets, ZeroDSet

RESULT_FILE = "result.json"


@dataclasses.dataclass
class FailedRun:
    """A deepkin flame run that OpenFOAM stopped: its one-line reason."""

    chemistry: str
    failed: str


def run_flame(case: FlameCase, folder: Path, model_path: Path, chemistry: str, url: str | None,
              token: str | None, band_k: float, timeout_s: float, fuel: str | None = None,
              oxidizer: str | None = None, keep_failure: bool = True,
              resume: bool = False) -> dict[str, Any]:
    """Run ``case`` in ``folder`` once (cached in ``folder``/result.json) with ``chemistry``
    (``deepkin``: the model served at ``url`` as ``model_path``'s stem, bearer ``token``;
    ``deepkin-inprocess``: ``model_path``'s step exported into the case, stepped inside the
    solver; ``ode``: OpenFOAM's own); the run as a dict. With ``keep_failure``, an OpenFOAM
    failure is recorded as ``{"chemistry", "failed"}`` instead of raised. ``resume`` (ODE
    runs): a run stopped in ``folder`` goes on from its last complete written time."""
    from couplers.openfoam.flame_runs import (
        CounterflowRun,
        PremixedRun,
        cached_run,
        counterflow_run,
        premixed_run,
    )

    fuel = fuel if fuel is not None else case.fuel
    oxidizer = oxidizer if oxidizer is not None else case.oxidizer
    url = url or "http://127.0.0.1:8000"

    def run():
        try:
            if case.kind == "flame1d":
                return premixed_run(folder, url, str(model_path), chemistry, case.phi,
                                    case.end_time_s, temperature_k=case.temperature_k,
                                    pressure_atm=case.pressure_atm, cells=case.cell_count,
                                    steps_per_call=case.steps_per_call, fuel=fuel,
                                    oxidizer=oxidizer, token=token, timeout_s=timeout_s,
                                    band_k=band_k, resume=resume)
            return counterflow_run(folder, url, str(model_path), chemistry, case.end_time_s,
                                   fuel=fuel, oxidizer=oxidizer,
                                   steps_per_call=case.steps_per_call,
                                   temperature_k=case.temperature_k,
                                   pressure_atm=case.pressure_atm,
                                   velocity_m_s=case.velocity_m_s, cells=case.cell_count,
                                   cells_y=case.cells_y, token=token, timeout_s=timeout_s,
                                   band_k=band_k, resume=resume)
        except (FoamError, InputError) as exc:
            if not keep_failure or not (folder / "system").is_dir():
                raise  # the case was not even written: a configuration error, not a result
            return FailedRun(chemistry, str(exc))

    def load(data: dict):
        if "failed" in data:
            return FailedRun(**data)
        return PremixedRun(**data) if case.kind == "flame1d" else CounterflowRun.from_dict(data)

    if case.kind == "counterflow" and fuel is None:
        raise InputError(f"{case.label}: a counterflow case needs its fuel stream (fuel)")
    return dataclasses.asdict(cached_run(folder, run, load, keep_stopped=resume))


def flame_states(case_dir: Path, from_time_s: float | None, out: Path) -> Path | None:
    """Every cell state ``case_dir``'s run wrote after ``from_time_s`` (s; None: after the
    first written time) as a states file at ``out``; None when the run wrote no such time."""
    from couplers.openfoam.states import case_states
    from mechanisms.states_file import write_states

    try:
        states, species, origin = case_states(case_dir, from_time_s)
    except InputError:
        return None  # a run stopped before its first write: nothing to harvest
    return write_states(out, states, species, origin)


def run_zero_d(model_path: Path, fuel: str, oxidizer: str, grid: ZeroDSet, out_dir: Path,
               states_out: Path | None, progress: bool, workers: int = 1,
               small_calls: str = "torchscript") -> dict[str, Any]:
    """The surrogate's 0D rollouts over ``grid``, cached as ``out_dir``/result.json: per
    condition the end temperature (K), the ignition delay (s) and the rollout's end time (s).

    The grid is rolled out in parts, one per (T0, P) pair (:func:`kinetics.validation.validate.validate`,
    each part's report in ``out_dir/<T0>K-<P>atm/``, cached there), ``workers`` processes at a
    time, the slowest (lowest T0 and P) first. A part rolls out for twice its own slowest
    ignition delay, so a fast condition is no longer stepped as long as the grid's slowest, and
    the slow-induction conditions, whose cells Cantera steps, are shared among the cores:
    ``states_out`` gets every part's states. ``small_calls``: the Integrator's (``aot``: the
    AOTInductor step, compiled here once before the parts start, read from its cache by each).

    Per condition it also holds ``after_ignition``: ``{species: [Cantera, surrogate,
    relative error]}``, each side's mass fraction ``grid.after_ignition_s`` s after its own
    ignition (surrogate and error None when the surrogate had not got there; empty when Cantera
    never ignites), from :func:`kinetics.validation.validate.validate`'s own Cantera run."""
    saved = out_dir / RESULT_FILE
    cached = _cached_result(saved, grid, states_out)
    if cached is not None:
        return cached
    parts = [dataclasses.replace(grid, temperature_k=(t,), pressure_atm=(p,))
             for t in grid.temperature_k for p in grid.pressure_atm]
    folders = [out_dir / zero_d_part_name(part.temperature_k[0], part.pressure_atm[0])
               for part in parts]
    out_dir.mkdir(parents=True, exist_ok=True)
    part_states = [None if states_out is None else f.with_name(f.name + ".states.h5")
                   for f in folders]
    if small_calls != "torchscript" and not all(
            _cached_result(f / RESULT_FILE, p, st) for f, p, st in zip(folders, parts, part_states)):
        _integrator(model_path, small_calls)  # compiled (or found in the cache) once, here
    args = [(model_path, fuel, oxidizer, part, folder, st, workers, small_calls)
            for part, folder, st in zip(parts, folders, part_states)]
    order = sorted(range(len(parts)), key=lambda i: (parts[i].temperature_k[0],
                                                     parts[i].pressure_atm[0]))
    results: list[dict[str, Any] | None] = [None] * len(parts)
    from tqdm import tqdm

    bar = tqdm(total=len(parts), desc="0D rollouts", unit="part", disable=not progress)
    try:
        # started in order of T0 and P, each part counted as it ends
        for j, result in each_in_processes(_zero_d_part, [args[i] for i in order], workers):
            results[order[j]] = result
            bar.update()
    finally:
        bar.close()
    conditions = [c for r in results for c in r["conditions"]]
    if states_out is not None:
        _join_states_files([p for p in part_states if p is not None], states_out)
    result = {"end_time_s": max(r["end_time_s"] for r in results),
              "after_ignition": results[0]["after_ignition"],
              "rollout_steps": max(r["rollout_steps"] for r in results),
              "seconds": sum(r["seconds"] for r in results),
              "conditions": conditions,
              "fallback_fraction": float(np.mean([r["fallback_fraction"] for r in results]))}
    atomic_write_text(saved, json.dumps(result, indent=1))
    return result


def zero_d_part_name(temperature_k: float, pressure_atm: float) -> str:
    """The folder of one (T0, P) part of a 0D grid under the grid's folder, e.g. ``1000K-1atm``."""
    return f"{temperature_k:g}K-{pressure_atm:g}atm"


def _integrator(model_path: Path, small_calls: str):
    """The model's Integrator on the default device; ``small_calls`` as asked where that is the
    CPU (the AOTInductor step runs on CPU only), else TorchScript."""
    from kinetics.integrator import Integrator
    from kinetics.step.device import resolve_device

    on_cpu = resolve_device("auto").type == "cpu"
    return Integrator.load(model_path, device="auto",
                           small_calls=small_calls if on_cpu else "torchscript")


def _zero_d_part(model_path: Path, fuel: str, oxidizer: str, grid: ZeroDSet, out_dir: Path,
                 states_out: Path | None, workers: int, small_calls: str = "torchscript"
                 ) -> dict[str, Any]:
    """One part of :func:`run_zero_d` (one torch thread when parts run side by side)."""
    saved = out_dir / RESULT_FILE
    cached = _cached_result(saved, grid, states_out)
    if cached is not None:
        return cached
    import torch

    from kinetics.validation.validate import tracked_species, validate

    if workers > 1:
        torch.set_num_threads(1)
    integrator = _integrator(model_path, small_calls)
    request = _after_ignition_request(grid)
    report = validate(integrator, fuel, oxidizer, list(grid.temperature_k),
                      list(grid.pressure_atm), list(grid.phi), rollout_steps=grid.steps,
                      out_dir=out_dir, progress=False,
                      ignition_search_s=grid.ignition_search_s,
                      after_ignition_s=grid.after_ignition_s,
                      after_ignition_species=request["species"], states_out=states_out)
    end_time_s = report.rollout_steps * integrator.dt_s
    tracked = tracked_species(integrator.species, request["species"])
    result = {"end_time_s": end_time_s,
              "after_ignition": {**request, "tracked": tracked},
              "rollout_steps": report.rollout_steps, "seconds": report.seconds_surrogate,
              "conditions": [{"temperature_k": c.temperature_k, "pressure_atm": c.pressure_atm,
                              "phi": c.phi, "t_end_k": c.final_t_surrogate_k,
                              "idt_s": c.idt_surrogate_s, "served": c.served_fraction,
                              "end_time_s": end_time_s, "after_ignition": c.after_ignition}
                             for c in report.conditions],
              "fallback_fraction": report.fallback_fraction}
    atomic_write_text(saved, json.dumps(result, indent=1))
    return result


def _after_ignition_request(grid: ZeroDSet) -> dict[str, Any]:
    """What a rollout's after-ignition figures were asked for: ``species`` (None: validate's
    default, CO and NO where the mechanism has them) and ``delay_s`` (s)."""
    species = None if grid.after_ignition_species is None else list(grid.after_ignition_species)
    return {"species": species, "delay_s": grid.after_ignition_s}


def _cached_result(saved: Path, grid: ZeroDSet, states_out: Path | None) -> dict[str, Any] | None:
    """The result cached at ``saved`` when it answers ``grid``'s after-ignition request (a
    result written before the loop tracked species, or for other species, is computed again)
    and ``states_out`` (when asked) exists; None otherwise."""
    if not saved.is_file() or (states_out is not None and not states_out.is_file()):
        return None
    result = json.loads(saved.read_text())
    held = result.get("after_ignition") or {}
    request = _after_ignition_request(grid)
    if any(held.get(key) != value for key, value in request.items()):
        return None
    return result


def _join_states_files(parts: list[Path], out: Path) -> Path:
    """The states of ``parts`` (states files of the same species) as one file at ``out``."""
    from mechanisms.states_file import read_states, write_states

    read = [read_states(p) for p in parts]
    species = read[0][1]
    origin = "; ".join(dict.fromkeys(r[2] for r in read))
    return write_states(out, np.concatenate([r[0] for r in read]), species, origin)


def flame_figures(case: FlameCase, run: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """The deepkin run against the ODE run of the same case: flame speed (m/s, relative error),
    peak and burnt-gas temperatures (K, error in K), the heat release of each temperature band
    over the ODE run's (bands holding ≥ 1 % of the ODE run's largest band), the served share."""
    out: dict[str, Any] = {"case": case.label, "kind": case.kind}
    if "failed" in run:
        return {**out, "failed": run["failed"]}
    if case.kind == "flame1d":
        out.update(speed_m_s=run["speed_m_s"], ode_speed_m_s=ref["speed_m_s"],
                   speed_rel=run["speed_m_s"] / ref["speed_m_s"] - 1.0,
                   peak_k=run["peak_temperature_k"], ode_peak_k=ref["peak_temperature_k"],
                   burnt_k=run["burnt_temperature_k"], ode_burnt_k=ref["burnt_temperature_k"])
        out["burnt_error_k"] = out["burnt_k"] - out["ode_burnt_k"]
    else:
        ours, theirs = run["history"][-1], _same_time(ref["history"], run["history"][-1]["time_s"])
        out.update(peak_k=ours["peak_temperature_k"], ode_peak_k=theirs["peak_temperature_k"],
                   position_mm=1e3 * ours["peak_position_m"],
                   ode_position_mm=1e3 * theirs["peak_position_m"])
        out["position_error_mm"] = out["position_mm"] - out["ode_position_mm"]
    out["peak_error_k"] = out["peak_k"] - out["ode_peak_k"]
    out["heat_release_ratio"] = _band_ratios(run.get("heat_release_w") or {},
                                             ref.get("heat_release_w") or {})
    out["served"] = run.get("reacting_network_fraction")
    return out


def _same_time(history: list[dict], time_s: float) -> dict:
    return min(history, key=lambda h: abs(h["time_s"] - time_s))


def _band_ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """``{band's lower edge (K): our heat release / theirs}`` where theirs is ≥ 1 % of its
    largest band."""
    if not theirs:
        return {}
    floor = 0.01 * max(abs(v) for v in theirs.values())
    return {band: ours.get(band, 0.0) / value for band, value in theirs.items()
            if abs(value) >= floor and value != 0.0}


def zero_d_figures(result: dict[str, Any], references: list[dict[str, Any]]) -> dict[str, Any]:
    """The rollouts against Cantera: per condition the end temperature error (K), the
    ignition delay's relative error (against Cantera's adaptive solution; 1 when exactly one
    side ignites) and, per tracked species, the mass fractions ``after_ignition_s`` s after
    each side's own ignition (``after_ignition``: ``{species: {"y", "cantera_y", "rel"}}``,
    ``rel`` 1 when the surrogate had not got there; none when Cantera never ignites); their
    worst values (``after_ignition_max_rel``: ``{species: worst relative error}``)."""
    rows = []
    for c, ref in zip(result["conditions"], references):
        after = {name: {"y": ours, "cantera_y": theirs, "rel": 1.0 if rel is None else rel}
                 for name, (theirs, ours, rel) in (c.get("after_ignition") or {}).items()}
        idt, ref_idt = c["idt_s"], ref["idt_s"]
        if ref_idt is None:
            idt_rel = None if idt is None else 1.0
        else:
            idt_rel = 1.0 if idt is None else abs(idt - ref_idt) / ref_idt
        rows.append({"label": f"{c['temperature_k']:g} K, {c['pressure_atm']:g} atm, "
                              f"phi {c['phi']:g}",
                     "t_end_k": c["t_end_k"], "cantera_t_end_k": ref["t_end_k"],
                     "equilibrium_error_k": c["t_end_k"] - ref["t_end_k"],
                     "cantera_equilibrium_k": ref["equilibrium_t_k"],
                     "idt_s": idt, "cantera_idt_s": ref_idt, "idt_rel": idt_rel,
                     "served": c["served"], "after_ignition": after})
    worst_t = max((abs(r["equilibrium_error_k"]) for r in rows), default=0.0)
    idts = [r["idt_rel"] for r in rows if r["idt_rel"] is not None]
    held = result.get("after_ignition") or {}
    worst_species: dict[str, float] = {}
    for name in held.get("tracked", []):
        values = [r["after_ignition"][name]["rel"] for r in rows if name in r["after_ignition"]]
        if values:
            worst_species[name] = max(values)
    return {"conditions": rows, "end_time_s": result["end_time_s"],
            "equilibrium_max_k": worst_t, "idt_max_rel": max(idts, default=0.0),
            "idt_mean_rel": sum(idts) / len(idts) if idts else 0.0,
            "after_ignition_s": held.get("delay_s"),
            "after_ignition_species": list(held.get("tracked", [])),
            "after_ignition_max_rel": worst_species}


def normalised_errors(figures: dict[str, Any], targets: Targets) -> dict[str, float]:
    """Each judged figure's |error| over its target, ``{name: value}`` (inf for a failed run):
    flame speed and peak temperature of every flame, the end temperature, ignition delay and
    tracked species after ignition of every 0D condition, and the grid's mean ignition-delay
    error."""
    out: dict[str, float] = {}
    for flame in figures.get("flames", []):
        name = flame["case"]
        if "failed" in flame:
            out[f"{name} failed"] = math.inf
            continue
        if "speed_rel" in flame:
            out[f"{name} flame speed"] = abs(flame["speed_rel"]) / targets.flame_speed_rel
        out[f"{name} peak T"] = abs(flame["peak_error_k"]) / targets.peak_temperature_k
    zero_d = figures.get("zero_d")
    if zero_d:
        for row in zero_d["conditions"]:
            out[f"0D {row['label']} end T"] = abs(row["equilibrium_error_k"]) / \
                targets.equilibrium_temperature_k
            if row["idt_rel"] is not None:
                out[f"0D {row['label']} ignition delay"] = row["idt_rel"] / \
                    targets.ignition_delay_max_rel
            for name, value in (row.get("after_ignition") or {}).items():
                out[f"0D {row['label']} {name} after ignition"] = value["rel"] / \
                    targets.after_ignition_rel
        idts = [row["idt_rel"] for row in zero_d["conditions"] if row["idt_rel"] is not None]
        if idts:
            out["0D mean ignition delay"] = sum(idts) / len(idts) / \
                targets.ignition_delay_mean_rel
    return out
