"""A 0D rollout's Cantera fallback: a fresh reactor per cell and step against followed cells.

    python benchmarks/rollout_fallback.py                                  # ch4-air, 1000 K, 1 atm
    python benchmarks/rollout_fallback.py --model h2-air-flame --temperature-k 975 --steps 5000

The slow-induction cells of a 0D rollout sit below the induction network's resolution and are
Cantera's for up to ~10^5 steps in a row. Without following, each of those steps restarts CVODES
from the cell's state (a fresh reactor: order 1, tiny first steps, a new Jacobian); inside
``Integrator.following_cells()`` (what ``deepkin validate`` and a refine round's 0D cases use), a
cell fed back unchanged goes on from its own reactor. Both rollouts start from the same fresh
mixtures (one cell per φ, the validation's batch of one (T0, P) part), one torch thread, and are
timed in one run, alternating blocks of ``--block`` steps so that the machine's load falls on
both alike. Printed: ms a step each way, the ratio, the fallback cell-steps, how many of the
followed ones went on without a restart, and the largest difference in T and Y between the two
rollouts at the end (the same ODE, integrated with or without restarts).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from mechanisms.composition import mixture_mass_fractions  # noqa: E402
from mechanisms.state import ONE_ATM_PA, join_states  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ch4-air")
    ap.add_argument("--temperature-k", type=float, default=1000.0)
    ap.add_argument("--pressure-atm", type=float, default=1.0)
    ap.add_argument("--phi", default="0.5,1,2")
    ap.add_argument("--steps", type=int, default=3000,
                    help="steps of each rollout (the cells fall back from ~step 1,000 at 1000 K, 1 atm)")
    ap.add_argument("--block", type=int, default=250, help="steps timed at a time, alternating")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = resolve_model(args.model)
    # two integrators of the same file: one follows its cells, the other steps them afresh
    sides = {"fresh": Integrator.load(path, device="cpu"),
             "followed": Integrator.load(path, device="cpu")}
    it = sides["fresh"]
    fuel, oxidizer = it.meta.streams
    phis = [float(v) for v in args.phi.split(",")]
    y0 = np.array([mixture_mass_fractions(it.gas, fuel, oxidizer, phi) for phi in phis])
    start = join_states(np.full(len(phis), args.temperature_k),
                        np.full(len(phis), args.pressure_atm * ONE_ATM_PA), y0)
    states = {side: torch.as_tensor(start.copy()) for side in sides}
    seconds = {side: 0.0 for side in sides}
    fallback = {side: 0 for side in sides}
    with sides["followed"].following_cells() as followed:
        done = 0
        while done < args.steps:
            n = min(args.block, args.steps - done)
            for side, integrator in sides.items():
                x = states[side]
                t = time.perf_counter()
                for _ in range(n):
                    res = integrator.advance(x)
                    x = res.states
                    fallback[side] += res.n_fallback
                seconds[side] += time.perf_counter() - t
                states[side] = x
            done += n
    a, b = states["fresh"].numpy(), states["followed"].numpy()
    per = {side: seconds[side] / args.steps * 1e3 for side in seconds}
    print(f"{args.model}: {args.temperature_k:g} K, {args.pressure_atm:g} atm, phi {args.phi}, "
          f"{args.steps} steps of {it.dt_s:g} s, 1 torch thread")
    print(f"  fresh reactor per cell-step: {per['fresh']:.3f} ms a step "
          f"({fallback['fresh']} fallback cell-steps)")
    print(f"  followed cells:              {per['followed']:.3f} ms a step "
          f"({fallback['followed']} fallback cell-steps: {followed.n_continued} went on, "
          f"{followed.n_restarted} restarted)")
    print(f"  ratio: {per['fresh'] / per['followed']:.2f}x; at the end max |dT| "
          f"{np.abs(a[:, 0] - b[:, 0]).max():.2e} K, max |dY| {np.abs(a[:, 2:] - b[:, 2:]).max():.2e}")


if __name__ == "__main__":
    main()
