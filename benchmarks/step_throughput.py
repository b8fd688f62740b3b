"""Surrogate step vs Cantera on the same states: cells/s and the ratio, measured in one run.

    python benchmarks/step_throughput.py                       # h2o2 and a GRI-sized network, CPU
    python benchmarks/step_throughput.py --device cuda --cells 65536 262144 1048576
    python benchmarks/step_throughput.py --model h2-air --cells 65536   # a trained model as shipped

For each mechanism a model file of the right shape is written with random weights (speed does
not depend on the weights); the states are taken from a short Cantera autoignition so that every
cell is a realistic one. The surrogate time includes everything `Integrator.step` does (checks,
Box-Cox, network, renormalisation, enthalpy inversion). Cantera steps each cell by dt in its own
constant-pressure reactor (rtol 1e-6, atol 1e-15: the CFD setting, faster than dataset labels).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.integrator import Integrator
from kinetics.model_file import read_model_file
from kinetics.registry import resolve_model
from kinetics.synthetic import write_random_model
from mechanisms.loading import load_mechanism, solution_from_yaml
from mechanisms.reactor import CFD_TOLERANCES, ReactorStep
from sampling.manifold import autoignition_profile

CASES = {"h2o2": ("h2o2.yaml", "H2:1", [1600, 800, 400]),
         "gri30": ("gri30.yaml", "CH4:1", [3200, 1600, 800, 400])}


def sample_states(gas: ct.Solution, fuel: str, n: int) -> np.ndarray:
    gas.set_equivalence_ratio(1.0, fuel, "O2:1,N2:3.76")
    _, states, _ = autoignition_profile(gas, 1400.0, 10 * ct.one_atm, gas.Y.copy(), t_max_s=0.05)
    rng = np.random.default_rng(0)
    return states[rng.integers(0, len(states), n)]


def time_call(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, nargs="+", default=[65536])
    parser.add_argument("--cantera-cells", type=int, default=300,
                        help="cells Cantera steps to measure its per-cell time")
    parser.add_argument("--mechanisms", nargs="+", default=list(CASES))
    parser.add_argument("--dtypes", nargs="+", default=["float32"],
                        help="network precision: float32, tf32, bfloat16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", help="a trained model (name or path) instead of random ones: "
                        "its own mechanism and fuel, its near-equilibrium network and fallback "
                        "cells included")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for key, path, gas, fuel in _cases(args, Path(tmp)):
            states = sample_states(gas, fuel, max(max(args.cells), args.cantera_cells))
            stepper = ReactorStep(gas, 1e-6, CFD_TOLERANCES)
            some = states[:args.cantera_cells]
            start = time.perf_counter()
            stepper.advance_all(some)
            cantera_per_cell = (time.perf_counter() - start) / len(some)
            print(f"{key}: Cantera {1 / cantera_per_cell:,.0f} cells/s "
                  f"({1e3 * cantera_per_cell:.3f} ms per cell, 1 core)")
            for precision in args.dtypes:
                torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
                torch.backends.cudnn.allow_tf32 = precision == "tf32"
                dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
                integrator = Integrator.load(path, device=args.device, dtype=dtype)
                for n in args.cells:
                    batch = states[:n]
                    if args.device != "cpu":
                        batch = torch.as_tensor(batch, device=integrator.device)
                    seconds = time_call(lambda b=batch, it=integrator: it.step(b), args.repeat)
                    rate = n / seconds
                    res = integrator.advance(batch)
                    print(f"  surrogate {precision:<8} {args.device:<6} {n:>8} cells: "
                          f"{rate:,.0f} cells/s, {rate * cantera_per_cell:.1f}x Cantera per cell "
                          f"({100 * res.n_tail_steps / n:.0f} % near-equilibrium network, "
                          f"{100 * res.n_fallback / n:.1f} % Cantera fallback)")


def _cases(args, tmp: Path):
    """``(label, model path, gas, fuel)`` for each benchmark case."""
    if args.model:
        path = resolve_model(args.model)
        meta, _, yaml_text = read_model_file(path)
        gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
        fuel = meta.training.get("fuel") or "H2:1"
        return [(meta.name, path, gas, fuel)]
    cases = []
    for key in args.mechanisms:
        mechanism, fuel, hidden = CASES[key]
        path = write_random_model(tmp / f"{key}.safetensors", mechanism, hidden=hidden)
        cases.append((key, path, load_mechanism(mechanism).solution(), fuel))
    return cases


if __name__ == "__main__":
    main()
