"""Integrator.advance at a few cells: the TorchScript step against the AOTInductor one, in one run.

    python benchmarks/small_call_step.py                     # ch4-air and h2-air-flame, 1, 3, 36, 128 cells
    python benchmarks/small_call_step.py --models ch4-air --cells 1 64 128 1024
    python benchmarks/small_call_step.py --models ch4-air --rollout 1200 5      # a 0D validation part
    python benchmarks/small_call_step.py --models ch4-air --rollout 1000 1 --steps 20000 --holds 0 32

The real call users make, ``Integrator.advance(states)`` (numpy in and out, the input check, the
flags and counts), of two Integrators of the same model at their default precision:
``small_calls="torchscript"`` (the TorchScript step, :mod:`kinetics.step.compiled_step`) and
``small_calls="aot"`` (the AOTInductor package of :mod:`kinetics.step.small_step`, compiled on the
first run into the cache ``$DEEPKIN_CACHE_DIR/aot`` or ``~/.cache/deepkin/aot``: 35-75 s a model
on one core, a C++ compiler needed). Calls above the Integrator's cut-over
(``small_call_max_cells``) are timed through the package too, up to the 1,024 cells it takes
(where it stops winning). The cells alternate the model's fresh stoichiometric mixture at
1,500 K and 1 atm (the main network alone: neither model routes a fresh mixture to its induction
network) and that mixture burnt to equilibrium (the main, then the near-equilibrium network), the
first one fresh; no cell needs the fallback (the counts printed say so).

Each count is timed on one thread, alternately, CPU time of the calling thread (the machine may
be shared), best of ``--repeat``; the ratio is TorchScript over AOTInductor, and the largest
difference between the two Integrators' states is printed with it.

``--rollout T0_K P_ATM`` times instead one part of a 0D validation grid (``deepkin validate``'s
rollout of φ 0.5, 1 and 2 from T0 at P: three cells a call, ``--steps`` steps), the Cantera
fallback included, each variant twice, alternately: the TorchScript step asked every step (the
rollout before the compiled step and the hold), and the AOTInductor step with each of
``--holds`` (a cell the model hands to Cantera is held there that many steps before the model is
asked again: ``Integrator.following_cells``; validate's default ``ROLLOUT_HOLD_STEPS``): process
CPU time (which includes validate's own Cantera run of the conditions) and the rollout's own wall
time, with the rollouts' ignition delays and end temperatures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.aot_small_calls import best_cpu_us  # noqa: E402
from benchmarks.state_mixes import AIR  # noqa: E402
from benchmarks.step_throughput import cpu_name, load_text  # noqa: E402
from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from kinetics.validation.validate import ROLLOUT_HOLD_STEPS  # noqa: E402
from mechanisms.state import ONE_ATM_PA  # noqa: E402


def cells(integrator: Integrator, n: int) -> np.ndarray:
    """``n`` cells ``[n, 2+ns]``: fresh (1,500 K, 1 atm, φ 1) and burnt (its equilibrium), alternately."""
    gas = integrator.gas
    gas.set_equivalence_ratio(1.0, integrator.meta.training.get("fuel") or "H2:1", AIR)
    gas.TP = 1500.0, ONE_ATM_PA
    fresh = np.r_[gas.T, gas.P, gas.Y]
    gas.equilibrate("HP")
    burnt = np.r_[gas.T, gas.P, gas.Y]
    return np.ascontiguousarray(np.stack([fresh if i % 2 == 0 else burnt for i in range(n)]))


def rollout(name: str, temperature_k: float, pressure_atm: float, steps: int,
            holds: list[int]) -> None:
    """One 0D validation part of model ``name`` rolled out by each variant: the TorchScript step
    asked every step (the baseline), and the AOTInductor step with each of ``holds`` (a cell the
    model hands to Cantera stays there that many steps before it is asked again; 0: asked every
    step); see the docstring."""
    import tempfile

    from kinetics.validation.validate import validate

    path = resolve_model(name)
    variants = [("torchscript", 0)] + [("aot", h) for h in holds]
    seconds: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    rollout_s: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            for mode, hold in variants:
                integrator = Integrator.load(path, device="cpu", small_calls=mode)
                training = integrator.meta.training
                started = time.process_time()
                report = validate(integrator, training["fuel"], training["oxidizer"],
                                  [temperature_k], [pressure_atm], [0.5, 1.0, 2.0],
                                  rollout_steps=steps, out_dir=f"{tmp}/{mode}-{hold}",
                                  progress=False, hold_steps=hold)
                cpu_s = time.process_time() - started
                seconds[mode, hold].append(cpu_s)
                rollout_s[mode, hold].append(report.seconds_surrogate)
                figures = ", ".join(
                    f"IDT {'none' if c.idt_surrogate_s is None else f'{c.idt_surrogate_s:.6g} s'}, "
                    f"end T {c.final_t_surrogate_k:.6f} K" for c in report.conditions)
                print(f"{name} {temperature_k:g} K, {pressure_atm:g} atm, {report.rollout_steps} steps, "
                      f"{mode}, hold {hold}: process CPU {cpu_s:.2f} s (rollout wall "
                      f"{report.seconds_surrogate:.2f} s, fallback {100 * report.fallback_fraction:.1f} %, "
                      f"held {100 * report.held_fraction:.1f} %); {figures} | {load_text()}",
                      flush=True)
    for what, times in (("process CPU (Cantera's reference run included)", seconds),
                        ("the rollout's wall time", rollout_s)):
        base = min(times["torchscript", 0])
        others = ", ".join(f"AOTInductor, hold {hold} {min(times['aot', hold]):.2f} s "
                           f"({base / min(times['aot', hold]):.2f}x)" for hold in holds)
        print(f"best of two, {what}: TorchScript asked every step {base:.2f} s; {others}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ch4-air", "h2-air-flame"])
    parser.add_argument("--cells", nargs="+", type=int, default=[1, 3, 36, 128])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rollout", nargs=2, type=float, metavar=("T0_K", "P_ATM"),
                        help="time a 0D validation part from T0 (K) at P (atm) instead")
    parser.add_argument("--steps", type=int, default=3000, help="the rollout's steps (--rollout)")
    parser.add_argument("--holds", nargs="+", type=int, default=[0, ROLLOUT_HOLD_STEPS],
                        help="the AOTInductor rollouts' hold_steps (--rollout; default: 0 and "
                             "validate's own)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{cpu_name()}, 1 thread; torch {torch.__version__}; {load_text()}", flush=True)
    if args.rollout:
        for name in args.models:
            rollout(name, args.rollout[0], args.rollout[1], args.steps, args.holds)
        return
    for name in args.models:
        path = resolve_model(name)
        started = time.perf_counter()
        aot = Integrator.load(path, device="cpu", small_calls="aot")
        took = time.perf_counter() - started
        plain = Integrator.load(path, device="cpu")
        compiled = (f"compiled in {aot._small.compile_s:.0f} s" if aot._small.compile_s
                    else f"from the cache ({took:.1f} s to load)")
        print(f"{name}: {aot.meta.n_species} species, networks in {aot.precision}; AOTInductor "
              f"package {compiled}; cut-over {aot.small_call_max_cells} cells", flush=True)
        aot.small_call_max_cells = max(aot.small_call_max_cells, max(args.cells))
        for n in args.cells:
            if n > aot._small.max_cells:
                print(f"{n:>6} cells: more than the package takes ({aot._small.max_cells})")
                continue
            x = cells(aot, n)
            a, b = aot.advance(x), plain.advance(x)
            delta = float(np.abs(a.states - b.states).max())
            routes = (f"tail {b.n_tail_steps}, induction {b.n_induction_steps}, "
                      f"fallback {b.n_fallback}")
            ts_us = aot_us = float("inf")
            for _ in range(args.repeat):  # alternately, best of each
                ts_us = min(ts_us, best_cpu_us(lambda x=x, it=plain: it.advance(x), 1))
                aot_us = min(aot_us, best_cpu_us(lambda x=x, it=aot: it.advance(x), 1))
            print(f"{n:>6} cells ({routes}): TorchScript {ts_us:8.1f} us, AOTInductor "
                  f"{aot_us:8.1f} us: {ts_us / aot_us:5.2f}x (largest |difference| {delta:.1e}) "
                  f"| {load_text()}", flush=True)


if __name__ == "__main__":
    main()
