"""Where a model's error in the minor species after a 0D ignition comes from (the 0D target "CO
and NO 10 ms after ignition", docs/training.md).

    python benchmarks/after_ignition_species.py MODEL --conditions 1000:5:0.5 1000:20:0.5
    python benchmarks/after_ignition_species.py ch4-air --species NO CO N2O --one-step

For each condition ``T0_K:P_ATM:PHI`` of the model's fuel and oxidizer:

- **rollout**: the surrogate's 0D rollout (``Integrator.advance``, one model step a call, the
  Cantera fallback included, as ``deepkin validate`` rolls out) against Cantera's adaptive
  solution (rtol 1e-10, atol 1e-20), each read at its own ignition (T0 + 400 K) plus 0.5, 1, 2, 5
  and 10 ms: the relative error of each tracked species and the temperature error (K);
- beside it, **Cantera from the surrogate's ignition**: the same mechanism integrated on from the
  surrogate's first state past its ignition, read at the same times. Near zero while the
  rollout's error is not: the error is made by the model's steps after ignition, not carried in
  from the induction;
- ``--one-step``: on Cantera's own burnt gas 1, 2, 5 and 10 ms after ignition, one model step's
  change of each tracked species over Cantera's change in the same dt (1 = exact; which network
  stepped the cell is printed);
- ``--own-state``: on the rollout's own states at the same times, each species' distance from
  that state's HP equilibrium and one model step's change over Cantera's from it: a model that
  does not move a species Cantera moves back toward equilibrium has stopped at a false fixed
  point.

One thread; a diagnosis, not a speed figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cantera as ct
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from mechanisms.ignition import IGNITION_RISE_K  # noqa: E402

READ_AFTER_S = (0.0005, 0.001, 0.002, 0.005, 0.01)
ONE_STEP_AFTER_S = (0.001, 0.002, 0.005, 0.01)
RTOL, ATOL = 1e-10, 1e-20


def _reactor(integrator: Integrator, t_k: float, p_pa: float, y: np.ndarray
             ) -> tuple[ct.IdealGasConstPressureReactor, ct.ReactorNet]:
    """A constant-pressure reactor of the model's mechanism at ``t_k`` (K), ``p_pa`` (Pa), ``y``."""
    gas = ct.Solution(yaml=integrator.mechanism_yaml, name=integrator.meta.phase)
    gas.TPY = t_k, p_pa, y
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = RTOL, ATOL
    return reactor, net


def _fresh(integrator: Integrator, t0_k: float, p_atm: float, phi: float) -> np.ndarray:
    """The model's fresh mixture ``[T, P, Y...]`` at ``phi``."""
    gas, training = integrator.gas, integrator.meta.training
    gas.set_equivalence_ratio(phi, training["fuel"], training["oxidizer"])
    gas.TP = t0_k, p_atm * ct.one_atm
    return np.r_[gas.T, gas.P, gas.Y]


def _cantera_ignition(integrator: Integrator, x0: np.ndarray
                      ) -> tuple[ct.IdealGasConstPressureReactor, ct.ReactorNet, float]:
    """Cantera from ``x0`` to just past its ignition: the reactor, its network, the ignition time (s)."""
    reactor, net = _reactor(integrator, x0[0], x0[1], x0[2:])
    level = x0[0] + IGNITION_RISE_K
    t_before, temp_before = 0.0, x0[0]
    while reactor.T < level:
        t_before, temp_before = net.time, reactor.T
        net.step()
    when = t_before + (level - temp_before) / (reactor.T - temp_before) * (net.time - t_before)
    return reactor, net, when


def rollout(integrator: Integrator, x0: np.ndarray, columns: list[int]
            ) -> tuple[list[str], dict[float, np.ndarray]]:
    """The rollout's relative error and Cantera-from-the-surrogate's, per read time (lines), and
    the rollout's own state ``[2+ns]`` at each read time."""
    reactor, net, ignition_s = _cantera_ignition(integrator, x0)
    reference = []
    for after in READ_AFTER_S:
        net.advance(ignition_s + after)
        reference.append((reactor.phase.Y[columns].copy(), reactor.T))
    dt, level = integrator.dt_s, x0[0] + IGNITION_RISE_K
    x, k, ignition, read = x0[None, :].copy(), 0, None, {}
    with integrator.following_cells():
        while len(read) < len(READ_AFTER_S):
            before = x
            x = integrator.advance(x).states
            k += 1
            if ignition is None and x[0, 0] >= level:
                ignition = (k - 1 + (level - before[0, 0]) / (x[0, 0] - before[0, 0])) * dt
                start = (k * dt, x[0].copy())
            if ignition is not None:
                for after in READ_AFTER_S:
                    if after not in read and k * dt >= ignition + after:
                        read[after] = (x[0, 2:][columns].copy(), x[0, 0], x[0].copy())
    started_s, state = start
    reactor, net = _reactor(integrator, state[0], state[1], state[2:])
    lines = [f"  ignition: Cantera {ignition_s * 1e3:.3f} ms, surrogate {ignition * 1e3:.3f} ms"]
    for after, (ref, ref_t) in zip(READ_AFTER_S, reference):
        net.advance(ignition + after - started_s)
        ours_y, ours_t, _ = read[after]
        ours = (ours_y - ref) / ref
        theirs = (reactor.phase.Y[columns] - ref) / ref
        lines.append(f"  +{after * 1e3:4.1f} ms  rollout " + " ".join(f"{v:+7.3f}" for v in ours)
                     + f"  T {ours_t - ref_t:+6.2f} K   Cantera from the surrogate's ignition "
                     + " ".join(f"{v:+7.3f}" for v in theirs) + f"  T {reactor.T - ref_t:+6.2f} K")
    return lines, {after: state for after, (_, _, state) in read.items()}


def own_state_step(integrator: Integrator, states: dict[float, np.ndarray], columns: list[int]
                   ) -> list[str]:
    """On the rollout's own states: each tracked species' distance from the state's HP
    equilibrium (relative), and one model step's change over Cantera's from the same state: where
    Cantera moves the state toward equilibrium and the model does not, the rollout has stopped at
    a false fixed point."""
    lines = []
    gas = ct.Solution(yaml=integrator.mechanism_yaml, name=integrator.meta.phase)
    for after, x in sorted(states.items()):
        gas.TPY = x[0], x[1], x[2:]
        gas.equilibrate("HP")
        y_eq = gas.Y[columns]
        off = np.divide(x[2:][columns] - y_eq, y_eq, out=np.full(len(columns), np.nan),
                        where=y_eq > 0)
        ratio, true, network = _step_against_cantera(integrator, x, columns)
        lines.append(f"  +{after * 1e3:4.1f} ms  own state, off equilibrium "
                     + " ".join(f"{v:+7.3f}" for v in off) + "   model/Cantera step "
                     + " ".join(f"{v:+8.2f}" for v in ratio) + f"  ({network}; Cantera's "
                     + "step " + " ".join(f"{v:+.1e}" for v in true) + ")")
    return lines


def one_step(integrator: Integrator, x0: np.ndarray, columns: list[int]) -> list[str]:
    """One model step's change over Cantera's on Cantera's burnt gas, per read time (lines)."""
    reactor, net, ignition_s = _cantera_ignition(integrator, x0)
    lines = []
    for after in ONE_STEP_AFTER_S:
        net.advance(ignition_s + after)
        x = np.r_[reactor.T, reactor.phase.P, reactor.phase.Y]
        ratio, _, network = _step_against_cantera(integrator, x, columns)
        lines.append(f"  +{after * 1e3:4.1f} ms  T {x[0]:7.1f} K  model/Cantera "
                     + " ".join(f"{v:+9.2f}" for v in ratio) + f"  ({network})")
    return lines


def _step_against_cantera(integrator: Integrator, x: np.ndarray, columns: list[int]
                          ) -> tuple[np.ndarray, np.ndarray, str]:
    """One model step of the state ``x`` ``[2+ns]`` against one Cantera step of the same dt:
    ``(model change / Cantera's change of each column (NaN where Cantera's is 0), Cantera's
    change, which stepped the cell)``."""
    result = integrator.advance(x[None, :].copy())
    exact, exact_net = _reactor(integrator, x[0], x[1], x[2:])
    exact_net.advance(integrator.dt_s)
    true = exact.phase.Y[columns] - x[2:][columns]
    model = result.states[0, 2:][columns] - x[2:][columns]
    ratio = np.divide(model, true, out=np.full_like(true, np.nan), where=true != 0)
    return ratio, true, _network(result)


def _network(result) -> str:
    """Which stepped the one cell of ``result``: Cantera or which network."""
    return ("Cantera" if result.n_fallback else "near-equilibrium" if result.n_tail_steps
            else "induction" if result.n_induction_steps else "main")


def parse_conditions(parser: argparse.ArgumentParser, texts: list[str]
                     ) -> list[tuple[float, float, float]]:
    """``(T0 (K), P (atm), φ)`` of each ``T0_K:P_ATM:PHI`` in ``texts``; a bad one ends the
    script with one line naming it."""
    conditions = []
    for text in texts:
        try:
            t0_k, p_atm, phi = (float(v) for v in text.split(":"))
        except ValueError:
            parser.error(f"--conditions: {text!r} is not T0_K:P_ATM:PHI")
        conditions.append((t0_k, p_atm, phi))
    return conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a shipped model's name or a model file")
    parser.add_argument("--conditions", nargs="+", default=["1000:5:0.5", "1000:20:0.5",
                                                           "1000:1:2", "1200:1:2"],
                        help="T0_K:P_ATM:PHI each")
    parser.add_argument("--species", nargs="+", default=["NO", "CO", "N2O", "NO2", "OH"])
    parser.add_argument("--one-step", action="store_true",
                        help="also one model step against Cantera on Cantera's burnt gas")
    parser.add_argument("--own-state", action="store_true",
                        help="also, on the rollout's own states: how far each species is from "
                             "equilibrium, and one model step against Cantera's from there")
    args = parser.parse_args()
    torch.set_num_threads(1)
    integrator = Integrator.load(resolve_model(args.model), device="cpu")
    names = integrator.gas.species_names
    unknown = [s for s in args.species if s not in names]
    if unknown:
        parser.error(f"--species: {unknown[0]} is not one of the model's species")
    columns = [names.index(s) for s in args.species]
    print(f"model {args.model}; species {' '.join(args.species)} (relative errors, in this order)")
    for t0_k, p_atm, phi in parse_conditions(parser, args.conditions):
        x0 = _fresh(integrator, t0_k, p_atm, phi)
        print(f"{t0_k:g} K, {p_atm:g} atm, phi {phi:g}")
        lines, states = rollout(integrator, x0, columns)
        for line in lines:
            print(line, flush=True)
        if args.own_state:
            for line in own_state_step(integrator, states, columns):
                print(line, flush=True)
        if args.one_step:
            for line in one_step(integrator, x0, columns):
                print(line, flush=True)


if __name__ == "__main__":
    main()
