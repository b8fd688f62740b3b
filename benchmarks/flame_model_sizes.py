"""Trained models of different sizes on the cells of real flames: per-core speed and coverage.

    python benchmarks/flame_model_sizes.py h2-air-flame.safetensors other.safetensors ...

For each model: the cells of Cantera's premixed flame (φ 1, 1 atm) and of a counterflow flame
(H2/N2 50/50 against air, strain 1000/s, 1 atm), each read on a uniform 20 µm grid as a CFD mesh
holds them (``kinetics/validation/flame_coverage.py``); the surrogate steps all of them on one torch thread
(fallback cells, which Cantera steps inside the call, included), Cantera steps the same cells on
one core with one reused reactor (rtol 1e-6, atol 1e-15: the CFD setting; frozen cells cost
nothing and are left out of its time, as a CFD code skips them). Printed per model: cells/s of
each, their ratio, and the share of non-frozen cells the networks served. The per-core benchmark
of record is ``benchmarks/step_throughput.py``; this one compares model sizes against each other
on the same flame cells in one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.integrator import Integrator
from kinetics.model.registry import resolve_model
from kinetics.validation.flame_coverage import _on_grid
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import CFD_TOLERANCES, ReactorStep


def flame_cells(gas: ct.Solution) -> dict[str, np.ndarray]:
    """The uniform-grid cells of the two flames, ``[n, 2+ns]`` each."""
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    gas.TP = 300.0, ct.one_atm
    premixed = ct.FreeFlame(gas, width=0.02)
    premixed.set_refine_criteria(ratio=3.0, slope=0.06, curve=0.12)
    premixed.solve(loglevel=0, auto=True)
    gas.TPX = 300.0, ct.one_atm, "O2:1,N2:3.76"
    y_ox, rho_o = gas.Y.copy(), gas.density
    gas.TPX = 300.0, ct.one_atm, "H2:0.5,N2:0.5"
    y_f, rho_f = gas.Y.copy(), gas.density
    width, strain = 0.02, 1000.0
    u_o = strain * width / 4.0
    counterflow = ct.CounterflowDiffusionFlame(gas, width=width)
    counterflow.fuel_inlet.Y, counterflow.fuel_inlet.T = y_f, 300.0
    counterflow.fuel_inlet.mdot = rho_f * u_o * np.sqrt(rho_o / rho_f)
    counterflow.oxidizer_inlet.Y, counterflow.oxidizer_inlet.T = y_ox, 300.0
    counterflow.oxidizer_inlet.mdot = rho_o * u_o
    counterflow.solve(loglevel=0, auto=True)
    return {"premixed": _on_grid(premixed, 20e-6)[0], "counterflow": _on_grid(counterflow, 20e-6)[0]}


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cantera-cells", type=int, default=400,
                        help="non-frozen cells Cantera steps per flame (its rate is per cell)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    first = Integrator.load(resolve_model(args.models[0]), device="cpu")
    gas = solution_from_yaml(first.mechanism_yaml, first.meta.phase, first.meta.mechanism_sha256)
    cells = flame_cells(gas)
    cantera = {}
    stepper = ReactorStep(gas, first.dt_s, CFD_TOLERANCES, reuse=True)
    for name, states in cells.items():
        hot = states[states[:, 0] >= first.meta.frozen_temperature_k]
        pick = hot[np.linspace(0, len(hot) - 1, min(args.cantera_cells, len(hot))).astype(int)]
        seconds = best_time(lambda p=pick: [stepper.advance(s) for s in p], 2)
        # Frozen cells cost Cantera nothing: its rate over all cells counts only the hot ones.
        cantera[name] = len(states) / (seconds * len(hot) / len(pick))
    print(f"{'model':<34} {'hidden':<16} {'MiB':>5} | " + " | ".join(
        f"{n}: surrogate, Cantera cells/s, ratio, served" for n in cells))
    for path in args.models:
        it = Integrator.load(resolve_model(path), device="cpu")
        row = []
        for name, states in cells.items():
            seconds = best_time(lambda s=states, m=it: m.advance(s), args.repeat)
            res = it.advance(states)
            active = res.n_cells - res.n_frozen
            served = (active - res.n_fallback) / active if active else 0.0
            rate = len(states) / seconds
            row.append(f"{rate:10.0f} {cantera[name]:9.0f} {rate / cantera[name]:5.1f}x "
                       f"{100 * served:5.1f} %")
        hidden = "x".join(str(h) for h in it.meta.architecture["hidden"])
        size = Path(resolve_model(path)).stat().st_size / 2**20
        print(f"{Path(path).name:<34} {hidden:<16} {size:5.1f} | " + " | ".join(row))


if __name__ == "__main__":
    main()
