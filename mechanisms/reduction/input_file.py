"""The reduction input file: pyMARS's keys plus deepkin's ``simulation:`` and ``deepmr:`` blocks.

A pyMARS input file works unchanged::

    model: gri30.yaml
    targets: [CH4, O2]
    retained-species: [N2]
    method: DRGEP
    error: 5.0                      # percent, max relative error of the targets over all conditions
    autoignition-conditions:
      - kind: constant volume       # or: constant pressure
        pressure: 1.0               # atm (pyMARS's documented unit)
        temperature: 1000.0         # K
        equivalence-ratio: 1.0
        fuel: {CH4: 1.0}
        oxidizer: {O2: 1.0, N2: 3.76}

deepkin extensions: ``pressure``, ``temperature`` and ``equivalence-ratio`` may be lists, and one
entry then stands for every combination (a grid); compositions may be strings (``"O2:1,N2:3.76"``);
``equilibrium-error-k`` makes the equilibrium temperature a target; ``laminar-flame-conditions``
adds flame speed as a target; ``simulation:`` sets tolerances and the ignition criterion;
``deepmr:`` configures the DeePMR optimiser. Every error is one :class:`InputError` line naming the
key; unknown keys get a "did you mean".
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from mechanisms.composition import mixture_mass_fractions, parse_composition
from mechanisms.config_file import check_keys, read_yaml_mapping
from mechanisms.errors import InputError, did_you_mean
from mechanisms.loading import Mechanism, load_mechanism
from mechanisms.reduction.config import Condition, DeePMRSettings, ReductionConfig, SimulationSettings
from mechanisms.reduction.run import METHODS
from mechanisms.state import ONE_ATM_PA

KINDS = ("constant volume", "constant pressure")
IGNITION_CRITERIA = ("temperature-rise", "max-dTdt")

TOP_KEYS = ("model", "phase-name", "targets", "retained-species", "method", "error",
            "autoignition-conditions", "laminar-flame-conditions", "sensitivity-analysis",
            "upper-threshold", "sensitivity-type", "psr-conditions", "equilibrium-error-k",
            "simulation", "deepmr")
IGNITION_KEYS = ("kind", "pressure", "temperature", "equivalence-ratio", "fuel", "oxidizer",
                 "reactants", "composition-type", "end-time", "max-steps")
FLAME_KEYS = ("pressure", "temperature", "equivalence-ratio", "fuel", "oxidizer", "reactants",
              "composition-type", "width")
SIMULATION_KEYS = ("rtol", "atol", "max-steps", "ignition-criterion", "cap-factor", "end-time")
DEEPMR_KEYS = ("seed", "iterations", "max-simulations", "initial-candidates",
               "candidates-per-iteration", "parent-fraction", "max-deletions", "children-per-parent",
               "screen-bound-start", "screen-bound-decay", "patience", "hidden", "epochs",
               "learning-rate", "start")


def _number(value: Any, where: str, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise InputError(f"{where}: must be finite, got {value!r}")
    if positive and (x < 0 or (x == 0 and not allow_zero)):
        raise InputError(f"{where}: must be > 0, got {value!r}")
    return x


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return int(value)


def _values(value: Any, where: str) -> list[float]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InputError(f"{where}: empty list")
    return [_number(v, where) for v in items]


def _composition_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return ",".join(f"{k}:{v}" for k, v in value.items())
    raise InputError(f"{where}: expected a composition like {{CH4: 1.0}} or 'CH4:1', got {value!r}")


def load_reduce_config(path: str | Path, method: str | None = None) -> ReductionConfig:
    """Read and check a reduction input file; ``method`` (CLI flag) overrides its ``method`` key."""
    path = Path(path)
    data = read_yaml_mapping(path, "input", expected="keys (model, targets, error, ...)")
    return parse_reduce_config(data, base_dir=path.parent, method=method, source_path=str(path))


def parse_reduce_config(data: dict[str, Any], base_dir: str | Path = ".", method: str | None = None,
                        source_path: str | None = None) -> ReductionConfig:
    """Check the keys of an input mapping and resolve it against the mechanism."""
    check_keys(data, TOP_KEYS)
    if "model" not in data:
        raise InputError("model: missing; give a mechanism file or a shipped name such as gri30.yaml")
    model = str(data["model"])
    candidate = Path(base_dir) / model
    mech = load_mechanism(str(candidate) if candidate.is_file() else model, data.get("phase-name") or None)
    names = mech.species_names

    def species_list(key: str) -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise InputError(f"{key}: expected a list of species names, got {value!r}")
        for sp in value:
            if sp not in names:
                raise InputError(f"{key}: species '{sp}' is not in {mech.source}"
                                 f"{did_you_mean(sp, names, case_hint=True)}")
        return [str(s) for s in value]

    targets = species_list("targets")
    retained = species_list("retained-species")

    chosen = _parse_method(method or data.get("method"), targets)

    if "error" not in data:
        raise InputError("error: missing; give the largest allowed error in percent (e.g. 5.0)")
    error = data["error"]
    if isinstance(error, bool) or not isinstance(error, (int, float)) or not math.isfinite(error) \
            or error <= 0:
        raise InputError(f"error: the error bound must be a number > 0 (percent), got {error!r}")
    if error >= 100:
        raise InputError(f"error: the error bound is in percent and must be < 100, got {error!r}")

    if data.get("sensitivity-analysis"):
        raise InputError("sensitivity-analysis: not implemented by deepkin; remove the key or set it "
                         "to false (deepmr searches beyond what sensitivity analysis reaches)")
    if data.get("psr-conditions"):
        raise InputError("psr-conditions: PSR targets are not implemented yet; remove the key")

    sim = _parse_simulation(data.get("simulation") or {})
    ignition = _parse_conditions(data.get("autoignition-conditions"), mech, sim, flames=False)
    flames = _parse_conditions(data.get("laminar-flame-conditions"), mech, sim, flames=True)
    if not ignition and not flames:
        raise InputError("autoignition-conditions: missing; give at least one condition")

    eq = data.get("equilibrium-error-k")
    eq_k = None if eq is None else _number(eq, "equilibrium-error-k")
    return ReductionConfig(mechanism=mech, targets=targets, retained=retained, method=chosen,
                           error_percent=float(error), ignition=ignition, flames=flames,
                           equilibrium_error_k=eq_k, simulation=sim,
                           deepmr=_parse_deepmr(data.get("deepmr") or {}), source_path=source_path)


def _parse_method(value: Any, targets: list[str]) -> str | None:
    """The method's registry name (lower case), checked against :data:`~run.METHODS`."""
    if value is None:
        return None
    chosen = str(value).lower()
    names = list(METHODS)
    if chosen == "pfa":
        raise InputError(f"method: PFA is not implemented by deepkin; use {', '.join(names[:-1])} "
                         f"or {names[-1]}")
    if chosen not in METHODS:
        raise InputError(f"method: unknown method '{chosen}' (use one of {', '.join(names)})"
                         f"{did_you_mean(chosen, names)}")
    if METHODS[chosen].needs_targets and not targets:
        raise InputError(f"targets: {chosen.upper()} needs at least one target species (e.g. [CH4, O2])")
    return chosen


def _parse_simulation(block: Any) -> SimulationSettings:
    if not isinstance(block, dict):
        raise InputError(f"simulation: expected a mapping, got {block!r}")
    check_keys(block, SIMULATION_KEYS, "simulation.")
    kw: dict[str, Any] = {}
    if "rtol" in block:
        kw["rtol"] = _number(block["rtol"], "simulation.rtol")
    if "atol" in block:
        kw["atol"] = _number(block["atol"], "simulation.atol")
    if "max-steps" in block:
        kw["max_steps"] = _int(block["max-steps"], "simulation.max-steps")
    if "cap-factor" in block:
        kw["cap_factor"] = _number(block["cap-factor"], "simulation.cap-factor")
        if kw["cap_factor"] <= 1:
            raise InputError("simulation.cap-factor: must be > 1")
    if "end-time" in block:
        kw["end_time_s"] = _number(block["end-time"], "simulation.end-time")
    if "ignition-criterion" in block:
        crit = str(block["ignition-criterion"])
        if crit not in IGNITION_CRITERIA:
            raise InputError(f"simulation.ignition-criterion: unknown '{crit}' (use "
                             f"{' or '.join(IGNITION_CRITERIA)}){did_you_mean(crit, IGNITION_CRITERIA)}")
        kw["ignition_criterion"] = crit
    return SimulationSettings(**kw)


def _parse_deepmr(block: Any) -> DeePMRSettings:
    if not isinstance(block, dict):
        raise InputError(f"deepmr: expected a mapping, got {block!r}")
    check_keys(block, DEEPMR_KEYS, "deepmr.")
    kw: dict[str, Any] = {}
    ints = {"iterations": 1, "max-simulations": 1, "initial-candidates": 1, "candidates-per-iteration": 1,
            "max-deletions": 1, "children-per-parent": 1, "patience": 1, "epochs": 1}
    for key, minimum in ints.items():
        if key in block:
            kw[key.replace("-", "_")] = _int(block[key], f"deepmr.{key}", minimum)
    if "seed" in block:
        kw["seed"] = _int(block["seed"], "deepmr.seed", 0)
    for key in ("parent-fraction", "screen-bound-start", "screen-bound-decay", "learning-rate"):
        if key in block:
            kw[key.replace("-", "_")] = _number(block[key], f"deepmr.{key}")
    if kw.get("parent_fraction", 0.05) > 1:
        raise InputError("deepmr.parent-fraction: must be in (0, 1]")
    if kw.get("screen_bound_decay", 0.5) > 1:
        raise InputError("deepmr.screen-bound-decay: must be in (0, 1]")
    if "hidden" in block:
        hidden = block["hidden"]
        if not isinstance(hidden, list) or not hidden:
            raise InputError(f"deepmr.hidden: expected a list of layer widths, got {hidden!r}")
        kw["hidden"] = tuple(_int(h, "deepmr.hidden") for h in hidden)
    if "start" in block:
        start = str(block["start"])
        if start not in ("full", "drgep"):
            raise InputError(f"deepmr.start: use 'full' or 'drgep', got '{start}'")
        kw["start"] = start
    return DeePMRSettings(**kw)


def _parse_conditions(entries: Any, mech: Mechanism, sim: SimulationSettings,
                      flames: bool) -> list[Condition]:
    key = "laminar-flame-conditions" if flames else "autoignition-conditions"
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InputError(f"{key}: expected a list of conditions, got {entries!r}")
    gas = mech.solution()
    out: list[Condition] = []
    for n, entry in enumerate(entries, start=1):
        where = f"{key}[{n}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping of keys (kind, pressure, temperature, ...)")
        check_keys(entry, FLAME_KEYS if flames else IGNITION_KEYS, f"{where}.")
        if flames:
            kind = "flame"
        else:
            kind = str(entry.get("kind", "")).strip().lower().replace("-", " ").replace("_", " ")
            if kind not in KINDS:
                raise InputError(f"{where}.kind: use 'constant volume' or 'constant pressure', got "
                                 f"{entry.get('kind')!r}{did_you_mean(kind, KINDS)}")
        for required in ("pressure", "temperature"):
            if required not in entry:
                unit = "atm" if required == "pressure" else "K"
                raise InputError(f"{where}: missing '{required}' ({unit})")
        pressures = _values(entry["pressure"], f"{where}.pressure")
        temps = _values(entry["temperature"], f"{where}.temperature")
        end_time = _number(entry["end-time"], f"{where}.end-time") if "end-time" in entry else None
        max_steps = _int(entry["max-steps"], f"{where}.max-steps") if "max-steps" in entry else None
        width = _number(entry["width"], f"{where}.width") if "width" in entry else 0.03
        mixtures: list[tuple[float | None, dict[str, float]]] = []
        if "reactants" in entry:
            if "equivalence-ratio" in entry or "fuel" in entry or "oxidizer" in entry:
                raise InputError(f"{where}: give either 'reactants' or 'fuel'+'oxidizer'+"
                                 "'equivalence-ratio', not both")
            comp = parse_composition(_composition_text(entry["reactants"], f"{where}.reactants"),
                                     gas.species_names, f"{where}.reactants")
            basis = str(entry.get("composition-type", "mole"))
            if basis not in ("mole", "mass"):
                raise InputError(f"{where}.composition-type: use 'mole' or 'mass', got '{basis}'")
            if basis == "mole":
                gas.TPX = 300.0, ONE_ATM_PA, comp
            else:
                gas.TPY = 300.0, ONE_ATM_PA, comp
            mixtures.append((None, _nonzero(gas.species_names, gas.Y)))
        else:
            for need in ("equivalence-ratio", "fuel", "oxidizer"):
                if need not in entry:
                    raise InputError(f"{where}: missing '{need}' (or give 'reactants')")
            fuel = _composition_text(entry["fuel"], f"{where}.fuel")
            oxid = _composition_text(entry["oxidizer"], f"{where}.oxidizer")
            for phi in _values(entry["equivalence-ratio"], f"{where}.equivalence-ratio"):
                try:
                    y = mixture_mass_fractions(gas, fuel, oxid, phi)
                except InputError as exc:
                    raise InputError(f"{where}: {exc}")
                mixtures.append((phi, _nonzero(gas.species_names, y)))
        for temp, pres, (phi, y) in itertools.product(temps, pressures, mixtures):
            short = "cv" if kind == "constant volume" else ("cp" if kind == "constant pressure" else "flame")
            mix = f"phi={phi:g}" if phi is not None else f"mixture {n}"
            label = f"{short} T0={temp:g} K P={pres:g} atm {mix}"
            out.append(Condition(kind=kind, temperature_k=temp, pressure_pa=pres * ONE_ATM_PA,
                                 mass_fractions=y, label=label, end_time_s=end_time,
                                 max_steps=max_steps, phi=phi, width_m=width))
    labels = [c.label for c in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InputError(f"{key}: condition '{dupes[0]}' is given twice")
    return out


def _nonzero(names: list[str] | tuple[str, ...], y: Any) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, y) if v > 0}
