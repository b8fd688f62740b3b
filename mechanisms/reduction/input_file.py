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

pyMARS's ``laminar-flame-conditions``, ``psr-conditions``, ``min-flame-speed``,
``sensitivity-analysis``, ``sensitivity-type``, ``upper-threshold`` and a condition's
``target-weights`` mean what they mean there. deepkin extensions: ``pressure``, ``temperature``
and ``equivalence-ratio`` may be lists, and one entry then stands for every combination (a grid);
compositions may be strings (``"O2:1,N2:3.76"``); ``equilibrium-error`` bounds the equilibrium
temperature of every condition (percent, default 1); ``laminar-flame-error`` and ``psr-error``
bound those targets (percent, default ``error``); ``weights`` weigh the targets in the objective;
``simulation:`` sets tolerances and the ignition criterion; ``deepmr:`` configures the DeePMR
optimiser. Every error is one :class:`InputError` line naming the key; unknown keys get a "did you
mean".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from mechanisms.composition import mixture_mass_fractions, parse_composition
from mechanisms.config_file import check_keys, is_number, read_yaml_mapping
from mechanisms.errors import InputError, did_you_mean
from mechanisms.loading import Mechanism, has_transport, load_mechanism
from mechanisms.reduction.config import (
    DEFAULT_EQUILIBRIUM_PERCENT,
    TARGETS,
    Condition,
    DeePMRSettings,
    ReductionConfig,
    SensitivitySettings,
    SimulationSettings,
)
from mechanisms.reduction.run import METHODS
from mechanisms.state import ONE_ATM_PA

KINDS = ("constant volume", "constant pressure")
IGNITION_CRITERIA = ("temperature-rise", "max-dTdt")
SENSITIVITY_TYPES = ("greedy", "initial")

TOP_KEYS = ("model", "phase-name", "targets", "retained-species", "method", "error",
            "autoignition-conditions", "laminar-flame-conditions", "psr-conditions",
            "laminar-flame-error", "psr-error", "equilibrium-error", "equilibrium-error-k", "weights",
            "min-flame-speed", "sensitivity-analysis", "upper-threshold", "sensitivity-type",
            "simulation", "deepmr")
MIXTURE_KEYS = ("pressure", "temperature", "equivalence-ratio", "fuel", "oxidizer", "reactants",
                "composition-type", "target-weights")
IGNITION_KEYS = ("kind", *MIXTURE_KEYS, "end-time", "max-steps")
FLAME_KEYS = ("kind", *MIXTURE_KEYS, "width")
PSR_KEYS = (*MIXTURE_KEYS, "residence-time")
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
    error = _percent(data, "error", None)
    if "equilibrium-error-k" in data:
        raise InputError("equilibrium-error-k: replaced by equilibrium-error, in percent of the detailed "
                         "equilibrium temperature (default 1; 1 % is about 25 K at 2500 K)")
    sim = _parse_simulation(data.get("simulation") or {})
    if "min-flame-speed" in data:
        sim = replace(sim, min_flame_speed_m_s=_number(data["min-flame-speed"], "min-flame-speed"))
    n_targets = len(targets)
    ignition = _parse_conditions(data.get("autoignition-conditions"), mech, "ignition", n_targets)
    flames = _parse_conditions(data.get("laminar-flame-conditions"), mech, "flame", n_targets)
    psrs = _parse_conditions(data.get("psr-conditions"), mech, "psr", n_targets)
    if not (ignition or flames or psrs):
        raise InputError("autoignition-conditions: missing; give at least one condition")
    if flames and not has_transport(mech.solution()):
        raise InputError(f"laminar-flame-conditions: {mech.source} has no transport data; a flame "
                         "speed needs it")
    for key, present, what in (("laminar-flame-error", flames, "laminar-flame-conditions"),
                               ("psr-error", psrs, "psr-conditions")):
        if key in data and not present:
            raise InputError(f"{key}: there are no {what} to bound")
    return ReductionConfig(mechanism=mech, targets=targets, retained=retained, method=chosen,
                           error_percent=error, ignition=ignition, flames=flames, psrs=psrs,
                           equilibrium_percent=_percent(data, "equilibrium-error",
                                                        DEFAULT_EQUILIBRIUM_PERCENT),
                           flame_percent=_percent(data, "laminar-flame-error", error),
                           psr_percent=_percent(data, "psr-error", error),
                           weights=_parse_weights(data.get("weights")), simulation=sim,
                           deepmr=_parse_deepmr(data.get("deepmr") or {}),
                           sensitivity=_parse_sensitivity(data, chosen), source_path=source_path)


def _percent(data: dict[str, Any], key: str, default: float | None) -> float:
    """The bound ``data[key]`` (percent, > 0 and < 100), or ``default`` (None: the key is required)."""
    if key not in data:
        if default is None:
            raise InputError(f"{key}: missing; give the largest allowed error in percent (e.g. 5.0)")
        return default
    value = data[key]
    if not is_number(value) or value <= 0:
        raise InputError(f"{key}: the error bound must be a number > 0 (percent), got {value!r}")
    if value >= 100:
        raise InputError(f"{key}: the error bound is in percent and must be < 100, got {value!r}")
    return float(value)


def _parse_weights(block: Any) -> dict[str, float]:
    """``weights:``: a mapping of target names to weights >= 0 (at least one > 0)."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise InputError(f"weights: expected a mapping like {{ignition-delay: 1, flame-speed: 2}}, "
                         f"got {block!r}")
    check_keys(block, TARGETS, "weights.", what="target", list_known=True)
    weights = {str(k): _number(v, f"weights.{k}", allow_zero=True) for k, v in block.items()}
    if weights and not any(weights.values()):
        raise InputError("weights: at least one weight must be > 0")
    return weights


def _parse_sensitivity(data: dict[str, Any], method: str | None) -> SensitivitySettings | None:
    """pyMARS's ``sensitivity-analysis`` (bool), ``upper-threshold`` and ``sensitivity-type``."""
    enabled = data.get("sensitivity-analysis", False)
    if not isinstance(enabled, bool):
        raise InputError(f"sensitivity-analysis: use true or false, got {enabled!r}")
    if not enabled:
        return None
    graph = [n for n, m in METHODS.items() if m.graph]
    if method is not None and not METHODS[method].graph:
        raise InputError(f"sensitivity-analysis: follows a graph method ({', '.join(graph)}), not "
                         f"{method}; set it to false or change the method")
    kw: dict[str, Any] = {}
    if "upper-threshold" in data:
        kw["upper_threshold"] = _number(data["upper-threshold"], "upper-threshold")
    if "sensitivity-type" in data:
        kind = str(data["sensitivity-type"]).lower()
        if kind not in SENSITIVITY_TYPES:
            raise InputError(f"sensitivity-type: use 'greedy' or 'initial', got "
                             f"{data['sensitivity-type']!r}{did_you_mean(kind, SENSITIVITY_TYPES)}")
        kw["kind"] = kind
    return SensitivitySettings(**kw)


def _parse_method(value: Any, targets: list[str]) -> str | None:
    """The method's registry name (lower case), checked against :data:`~run.METHODS`."""
    if value is None:
        return None
    chosen = str(value).lower()
    names = list(METHODS)
    if chosen not in METHODS:
        raise InputError(f"method: unknown method '{chosen}' (use one of {', '.join(names)})"
                         f"{did_you_mean(chosen, names)}")
    if METHODS[chosen].graph and not targets:
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


FAMILIES = {"ignition": ("autoignition-conditions", IGNITION_KEYS),
            "flame": ("laminar-flame-conditions", FLAME_KEYS),
            "psr": ("psr-conditions", PSR_KEYS)}


def _parse_conditions(entries: Any, mech: Mechanism, family: str, n_targets: int) -> list[Condition]:
    """The conditions of one list (``family``: ``"ignition"``, ``"flame"`` or ``"psr"``), each grid
    entry expanded; ``n_targets`` is how many ``target-weights`` an entry must give."""
    key, known = FAMILIES[family]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InputError(f"{key}: expected a list of conditions, got {entries!r}")
    gas = mech.solution()
    out: list[Condition] = []
    for n, entry in enumerate(entries, start=1):
        where = f"{key}[{n}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping of keys (pressure, temperature, ...)")
        check_keys(entry, known, f"{where}.")
        kind = _kind(entry, family, where)
        for required in ("pressure", "temperature"):
            if required not in entry:
                unit = "atm" if required == "pressure" else "K"
                raise InputError(f"{where}: missing '{required}' ({unit})")
        pressures = _values(entry["pressure"], f"{where}.pressure")
        temps = _values(entry["temperature"], f"{where}.temperature")
        extra: dict[str, Any] = {}
        if "end-time" in entry:
            extra["end_time_s"] = _number(entry["end-time"], f"{where}.end-time")
        if "max-steps" in entry:
            extra["max_steps"] = _int(entry["max-steps"], f"{where}.max-steps")
        if "width" in entry:
            extra["width_m"] = _number(entry["width"], f"{where}.width")
        if "residence-time" in entry:
            extra["residence_time_s"] = _number(entry["residence-time"], f"{where}.residence-time")
        if "target-weights" in entry:
            extra["target_weights"] = _target_weights(entry["target-weights"], f"{where}.target-weights",
                                                      n_targets)
        for temp, pres, (phi, y) in itertools.product(temps, pressures, _mixtures(entry, gas, where)):
            short = {"constant volume": "cv", "constant pressure": "cp"}.get(kind, kind)
            mix = f"phi={phi:g}" if phi is not None else f"mixture {n}"
            label = f"{short} T0={temp:g} K P={pres:g} atm {mix}"
            out.append(Condition(kind=kind, temperature_k=temp, pressure_pa=pres * ONE_ATM_PA,
                                 mass_fractions=y, label=label, phi=phi, **extra))
    labels = [c.label for c in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InputError(f"{key}: condition '{dupes[0]}' is given twice")
    return out


def _kind(entry: dict[str, Any], family: str, where: str) -> str:
    """The condition kind of an entry: its ``kind`` for ignition, ``flame`` or ``psr`` otherwise."""
    if family == "psr":
        return "psr"
    raw = entry.get("kind")
    if family == "flame":
        if raw is not None and str(raw).strip().lower() != "premixed":
            raise InputError(f"{where}.kind: a laminar flame is 'premixed' (or leave kind out), got {raw!r}")
        return "flame"
    kind = str(raw or "").strip().lower().replace("-", " ").replace("_", " ")
    if kind not in KINDS:
        raise InputError(f"{where}.kind: use 'constant volume' or 'constant pressure', got "
                         f"{raw!r}{did_you_mean(kind, KINDS)}")
    return kind


def _target_weights(value: Any, where: str, n_targets: int) -> tuple[float, ...]:
    """pyMARS's ``target-weights``: one number >= 0 per target species, in ``targets`` order."""
    if not isinstance(value, list) or len(value) != n_targets:
        raise InputError(f"{where}: expected a list of {n_targets} weights (one per target species, "
                         f"in the order of 'targets'), got {value!r}")
    return tuple(_number(v, where, allow_zero=True) for v in value)


def _mixtures(entry: dict[str, Any], gas, where: str) -> list[tuple[float | None, dict[str, float]]]:
    """``(phi, mass fractions)`` of every mixture an entry gives: its ``reactants``, or each
    ``equivalence-ratio`` of ``fuel`` in ``oxidizer``."""
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
        return [(None, _nonzero(gas.species_names, gas.Y))]
    for need in ("equivalence-ratio", "fuel", "oxidizer"):
        if need not in entry:
            raise InputError(f"{where}: missing '{need}' (or give 'reactants')")
    fuel = _composition_text(entry["fuel"], f"{where}.fuel")
    oxid = _composition_text(entry["oxidizer"], f"{where}.oxidizer")
    out = []
    for phi in _values(entry["equivalence-ratio"], f"{where}.equivalence-ratio"):
        try:
            y = mixture_mass_fractions(gas, fuel, oxid, phi)
        except InputError as exc:
            raise InputError(f"{where}: {exc}")
        out.append((phi, _nonzero(gas.species_names, y)))
    return out


def _nonzero(names: list[str] | tuple[str, ...], y: Any) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, y) if v > 0}
