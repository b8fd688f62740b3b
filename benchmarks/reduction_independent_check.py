"""Independent check of a reduced mechanism: plain Cantera and PyYAML, none of deepkin's code.

Reads the reduction input file (its ``model``, ``phase-name`` and condition lists, grids expanded as
deepkin expands them), loads the reduced YAML from disk and the detailed mechanism, and computes at
every condition, for both: the ignition delay (first T >= T0 + 400 K, linear interpolation in the
step; constant volume or pressure as the condition says) with tighter tolerances than the
reduction used (rtol 1e-9), the equilibrium temperature (UV at constant volume, HP otherwise) and,
for ``laminar-flame-conditions``, the flame speed of a FreeFlame solved from scratch. Prints the
max and mean relative error per target and the worst condition. (PSR conditions are not rerun.)

    python benchmarks/reduction_independent_check.py reduced-ch4/deepmr.yaml \
        -i docs/examples/reduce-gri30-methane.yaml
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import cantera as ct
import numpy as np
import yaml


def composition(value) -> str:
    return value if isinstance(value, str) else ",".join(f"{k}:{v}" for k, v in value.items())


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def conditions(entries: list[dict], kind: str | None = None) -> list[dict]:
    """Every (T0, P, mixture) combination of the entries, as plain dicts."""
    out = []
    for entry in entries or []:
        mixtures = ([("reactants", entry["reactants"], None)] if "reactants" in entry else
                    [("phi", entry, phi) for phi in as_list(entry["equivalence-ratio"])])
        for t0, p_atm, mix in itertools.product(as_list(entry["temperature"]), as_list(entry["pressure"]),
                                                 mixtures):
            out.append({"kind": kind or entry["kind"], "T0": float(t0), "P": float(p_atm) * ct.one_atm,
                        "mixture": mix, "composition-type": entry.get("composition-type", "mole")})
    return out


def set_mixture(gas: ct.Solution, cond: dict) -> None:
    how, data, phi = cond["mixture"]
    if how == "reactants":
        if cond["composition-type"] == "mass":
            gas.TPY = cond["T0"], cond["P"], composition(data)
        else:
            gas.TPX = cond["T0"], cond["P"], composition(data)
    else:
        gas.set_equivalence_ratio(phi, composition(data["fuel"]), composition(data["oxidizer"]))
        gas.TP = cond["T0"], cond["P"]


def ignition_delay(gas: ct.Solution, cond: dict, rtol: float, t_end_s: float = 100.0) -> float:
    """Ignition delay (s); NaN when T0 + 400 K is not reached by ``t_end_s``."""
    set_mixture(gas, cond)
    kind = ct.IdealGasReactor if cond["kind"] == "constant volume" else ct.IdealGasConstPressureReactor
    reactor = kind(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = rtol, 1e-18
    level = cond["T0"] + 400.0
    t_prev, temp_prev = 0.0, cond["T0"]
    while net.time < t_end_s:
        t = net.step()
        if reactor.T >= level:
            return t_prev + (level - temp_prev) * (t - t_prev) / (reactor.T - temp_prev)
        t_prev, temp_prev = t, reactor.T
    return float("nan")


def equilibrium_temperature(gas: ct.Solution, cond: dict) -> float:
    set_mixture(gas, cond)
    with warnings.catch_warnings():  # hot mixtures end a few K above the NASA-7 fits' 3000 K
        warnings.simplefilter("ignore", UserWarning)
        gas.equilibrate("UV" if cond["kind"] == "constant volume" else "HP")
    return gas.T


def flame_speed(gas: ct.Solution, cond: dict) -> float:
    set_mixture(gas, cond)
    flame = ct.FreeFlame(gas, width=0.03)
    flame.set_refine_criteria(ratio=3, slope=0.05, curve=0.1)
    flame.solve(loglevel=0, auto=True)
    return float(flame.velocity[0])


def report(name: str, errors: list[float], labels: list[str]) -> None:
    errors = np.array(errors)
    worst = int(np.argmax(errors))
    print(f"{name} over {len(errors)} conditions: max error {100 * errors.max():.2f} % ({labels[worst]}), "
          f"mean {100 * errors.mean():.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reduced", help="reduced mechanism YAML")
    parser.add_argument("-i", "--input", required=True, help="the reduction input file")
    parser.add_argument("--rtol", type=float, default=1e-9)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = yaml.safe_load(Path(args.input).read_text())
    model = Path(args.input).parent / spec["model"]
    model_name = str(model) if model.is_file() else spec["model"]
    phase = spec.get("phase-name")
    detailed = ct.Solution(model_name, phase) if phase else ct.Solution(model_name)
    reduced = ct.Solution(args.reduced)
    print(f"{args.reduced}: {reduced.n_species} species, {reduced.n_reactions} reactions "
          f"(detailed {detailed.n_species}, {detailed.n_reactions})")
    ignition = conditions(spec.get("autoignition-conditions"))
    flames = conditions(spec.get("laminar-flame-conditions"), kind="flame")

    def label(c: dict) -> str:
        mix = f"phi={c['mixture'][2]:g}" if c["mixture"][0] == "phi" else "reactants"
        return f"T0={c['T0']:g} K, P={c['P'] / ct.one_atm:g} atm, {mix}"

    if ignition:
        errors = []
        for cond in ignition:
            ref, red = (ignition_delay(g, cond, args.rtol) for g in (detailed, reduced))
            errors.append(abs(red - ref) / ref if np.isfinite(red) else 1.0)
        report(f"ignition delay (rtol {args.rtol:g})", errors, [label(c) for c in ignition])
    if flames:
        errors = []
        for cond in flames:
            ref, red = (flame_speed(g, cond) for g in (detailed, reduced))
            errors.append(abs(red - ref) / ref)
        report("laminar flame speed (FreeFlame from scratch)", errors, [label(c) for c in flames])
    every = ignition + flames
    teq = [equilibrium_temperature(detailed, c) for c in every]
    gaps = [abs(equilibrium_temperature(reduced, c) - t) for c, t in zip(every, teq)]
    print(f"equilibrium temperature: max |dT| {max(gaps):.1f} K, max error "
          f"{100 * max(g / t for g, t in zip(gaps, teq)):.3f} %; {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
