"""The ODE references a round is judged against, computed once and cached in the work folder,
keyed by everything that determines them.

- A flame: the same OpenFOAM case run with OpenFOAM's own ODE chemistry (same mechanism, mesh
  and deltaT): ``references/openfoam/<case>-<key>/`` (the case and its ``result.json``).
- A 0D condition: Cantera's adaptive solution of the constant-pressure reactor up to the
  rollout's end time (tight tolerances) and its HP equilibrium:
  ``references/zero-d/<key>.json``.

The key is a sha256 of the parameters (the mechanism's sha256 among them), so a reference is
reused by every round and by every run that shares the work folder's ``references/``, or the
folder ``references.folder`` names (several work folders, e.g. a recipe changed, share it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mechanisms.atomic_io import atomic_write_text
from mechanisms.processes import each_in_processes
from refinement.config import FlameCase


def key_of(params: dict[str, Any]) -> str:
    """A short stable key (hex) of a parameter mapping."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flame_params(case: FlameCase, fuel: str, oxidizer: str, mechanism_sha256: str,
                 model_dt_s: float, band_k: float) -> dict[str, Any]:
    """What an ODE flame run depends on: the case (with its fuel and oxidiser resolved), the
    mechanism, deltaT (the model's dt × steps per call) and the heat-release band width (K)."""
    return {"kind": case.kind, "phi": case.phi, "pressure_atm": case.pressure_atm,
            "temperature_k": case.temperature_k, "fuel": fuel, "oxidizer": oxidizer,
            "end_time_s": case.end_time_s, "cells": case.cell_count, "cells_y": case.cells_y,
            "velocity_m_s": case.velocity_m_s, "steps_per_call": case.steps_per_call,
            "mechanism_sha256": mechanism_sha256, "model_dt_s": model_dt_s, "band_k": band_k}


def flame_reference(root: Path, case: FlameCase, model_path: Path, fuel: str, oxidizer: str,
                    mechanism_sha256: str, model_dt_s: float, band_k: float,
                    timeout_s: float) -> dict[str, Any]:
    """The case run with OpenFOAM's ODE chemistry (the run's ``asdict``), from the cache or
    run now, going on from where a stopped run of it left off (FoamError when OpenFOAM fails: a
    reference must exist). One process at a time computes a given reference (an exclusive lock
    on ``references/locks/<case>-<key>.lock``): a second run sharing the folder
    (``references.folder``) waits for it and reads its result."""
    import fcntl

    from refinement.cases import run_flame

    folder = flame_reference_folder(root, case, fuel, oxidizer, mechanism_sha256, model_dt_s,
                                    band_k)
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run_flame(case, folder, model_path, "ode", None, None, band_k, timeout_s,
                         fuel=fuel, oxidizer=oxidizer, keep_failure=False, resume=True)


def flame_reference_folder(root: Path, case: FlameCase, fuel: str, oxidizer: str,
                           mechanism_sha256: str, model_dt_s: float, band_k: float) -> Path:
    """The cache folder of ``case``'s ODE reference (it holds ``result.json`` once computed)."""
    params = flame_params(case, fuel, oxidizer, mechanism_sha256, model_dt_s, band_k)
    return root / "openfoam" / f"{case.label}-{key_of(params)}"


def flame_references(root: Path, cases: list[FlameCase], model_path: Path, fuel: str,
                     oxidizer: str, mechanism_sha256: str, model_dt_s: float, band_k: float,
                     timeout_s: float, workers: int | None = None, progress: bool = True,
                     log: Callable[[str], None] | None = None) -> None:
    """Compute the ODE references of ``cases`` that are not cached yet, ``workers`` OpenFOAM
    runs at a time (default: one per core, at most one per missing case; each run is one
    process). A GRI-3.0 reference costs 20-40 CPU minutes per 10 ms of flame, so round 0's
    six flames take hours one after the other; two at a time halve that on 2 cores. FoamError
    (naming the case) when a run fails; the references already computed stay cached."""
    from tqdm import tqdm

    from couplers.openfoam.flame_runs import RESULT_FILE

    missing = [c for c in cases if not (flame_reference_folder(
        root, c, c.fuel or fuel, c.oxidizer or oxidizer, mechanism_sha256, model_dt_s, band_k)
        / RESULT_FILE).is_file()]
    if not missing:
        return
    workers = min(workers or os.cpu_count() or 1, len(missing))
    if log is not None:
        log(f"references: {len(missing)} ODE flame(s) to compute, {workers} at a time: "
            + ", ".join(c.label for c in missing))
    args = [(root, c, model_path, c.fuel or fuel, c.oxidizer or oxidizer, mechanism_sha256,
             model_dt_s, band_k, timeout_s) for c in missing]
    with tqdm(total=len(missing), desc="ODE references", unit="flame",
              disable=not progress) as bar:
        # each reference reported as it is computed (a failed run's FoamError re-raised)
        for i, seconds in each_in_processes(_timed_reference, args, workers):
            bar.update()
            if log is not None:
                log(f"references: {missing[i].label} computed in {seconds / 60:.1f} min")


def _timed_reference(*args: Any) -> float:
    started = time.perf_counter()
    flame_reference(*args)
    return time.perf_counter() - started


def zero_d_reference(root: Path, gas, fuel: str, oxidizer: str, mechanism_sha256: str,
                     temperature_k: float, pressure_atm: float, phi: float,
                     end_time_s: float) -> dict[str, Any]:
    """Cantera's constant-pressure reactor from the fresh mixture (T0 K, P atm, φ) to
    ``end_time_s`` s: ``t_end_k`` (K, interpolated at the end time), ``idt_s`` (T0 + 400 K
    crossing, None without ignition) and ``equilibrium_t_k`` (HP equilibrium, K)."""
    from mechanisms.composition import mixture_mass_fractions
    from mechanisms.ignition import IGNITION_RISE_K, crossing_time
    from mechanisms.reactor import trajectory
    from mechanisms.state import ONE_ATM_PA, join_states, temperature

    params = {"mechanism_sha256": mechanism_sha256, "fuel": fuel, "oxidizer": oxidizer,
              "temperature_k": temperature_k, "pressure_atm": pressure_atm, "phi": phi,
              "end_time_s": round(end_time_s, 12)}
    path = root / "zero-d" / f"{key_of(params)}.json"
    if path.is_file():
        return json.loads(path.read_text())["reference"]
    started = time.perf_counter()
    y0 = mixture_mass_fractions(gas, fuel, oxidizer, phi)
    p_pa = pressure_atm * ONE_ATM_PA
    times, states = trajectory(gas, join_states([temperature_k], [p_pa], y0[None, :])[0],
                               end_time_s)
    temps = temperature(states)
    gas.TPY = temperature_k, p_pa, y0
    gas.equilibrate("HP")
    idt = crossing_time(times, temps, temperature_k + IGNITION_RISE_K)
    reference = {"t_end_k": float(np.interp(end_time_s, times, temps)),
                 "idt_s": None if idt is None else float(idt), "equilibrium_t_k": float(gas.T)}
    atomic_write_text(path, json.dumps({"params": params, "reference": reference,
                                        "seconds": time.perf_counter() - started}, indent=1))
    return reference
