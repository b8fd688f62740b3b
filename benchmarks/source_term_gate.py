"""What a gate on the mechanism's own source term would do to a model's 0D rollout after
ignition (docs/training.md, "Why the burnt gas stays off equilibrium").

    python benchmarks/source_term_gate.py MODEL --gate 2 --conditions 1000:20:0.5

Each step from T0 + 50 K on, the rates the networks give the cell (d BCT(Y)/dt, the network the
routing chooses) are compared with the mechanism's own at the cell's state (Cantera's net
production rates, turned into the same Box-Cox rates); where they differ on any active species by
more than ``--gate`` times the serving network's target scale, Cantera takes the step (an
adiabatic constant-pressure reactor, rtol 1e-10), else the model (``Integrator.advance``). Printed
per condition: NO, CO and OH 10 ms after each side's own ignition against Cantera's adaptive
solution, and the share of the steps after ignition that Cantera took. An experiment in one
process, one thread, not a speed figure: the gate's cost (one source-term evaluation a cell) and
its Cantera steps are what a real gate would pay.
"""

from __future__ import annotations

import argparse
import time

import cantera as ct
import numpy as np
import torch
from after_ignition_species import _cantera_ignition, _fresh, _reactor, parse_conditions

from kinetics.integrator import ROUTE_INDUCTION, ROUTE_TAIL, Integrator
from kinetics.model.registry import resolve_model
from kinetics.networks.transforms import box_cox

SPECIES = ("NO", "CO", "OH")
AFTER_S = 0.01
START_ABOVE_T0_K = 50.0


def source_term_rates(gas, state: np.ndarray, lam: float) -> torch.Tensor:
    """The mechanism's d BCT(Y)/dt (1/s) ``[ns]`` at ``state`` ``[T, P, Y...]``."""
    gas.TPY = state[0], state[1], state[2:]
    dydt = gas.net_production_rates * gas.molecular_weights / gas.density
    return torch.tensor(np.clip(state[2:], 1e-30, None) ** (lam - 1.0) * dydt)


def gated_rollout(it: Integrator, x0: np.ndarray, gate: float, columns: list[int]
                  ) -> tuple[np.ndarray, float, int, int]:
    """``(Y of columns AFTER_S after ignition, ignition (s), steps after ignition, of them
    Cantera's)``."""
    st, lam = it.step_module, it.meta.box_cox_lambda
    gas = ct.Solution(yaml=it.mechanism_yaml, name=it.meta.phase)
    inert = torch.tensor([s in it.meta.inert_species for s in gas.species_names])
    x, k, ignition, after, cantera_steps = x0[None, :].copy(), 0, None, 0, 0
    while ignition is None or k * it.dt_s < ignition + AFTER_S:
        use_cantera = False
        if x[0, 0] > x0[0] + START_ABOVE_T0_K:
            y, t, p = torch.tensor(x[:, 2:]), torch.tensor(x[:, 0]), torch.tensor(x[:, 1])
            rates, route = st.rates(t, p, box_cox(y, lam), y)
            chosen = int(route[0])
            scale = (st.tail.y_std if chosen == ROUTE_TAIL else st.induction.y_std
                     if chosen == ROUTE_INDUCTION else st.head.y_std)
            off = ((rates[0] - source_term_rates(gas, x[0], lam)).abs() / scale).masked_fill(inert, 0)
            use_cantera = bool(off.max() > gate)
        if use_cantera:
            reactor, net = _reactor(it, x[0, 0], x[0, 1], x[0, 2:])
            net.advance(it.dt_s)
            x = np.r_[reactor.T, reactor.phase.P, reactor.phase.Y][None, :]
        else:
            x = it.advance(x).states
        k += 1
        if ignition is not None:
            after += 1
            cantera_steps += use_cantera
        elif x[0, 0] >= x0[0] + 400.0:
            ignition = k * it.dt_s
    return x[0, 2:][columns], ignition, after, cantera_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a shipped model's name or a model file")
    parser.add_argument("--gate", type=float, nargs="+", default=[2.0],
                        help="rate mismatch, in the serving network's target scale, above which "
                             "Cantera steps the cell")
    parser.add_argument("--conditions", nargs="+", default=["1000:20:0.5", "1000:5:0.5"],
                        help="T0_K:P_ATM:PHI each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    it = Integrator.load(resolve_model(args.model), device="cpu")
    columns = [it.gas.species_names.index(s) for s in SPECIES]
    for t0_k, p_atm, phi in parse_conditions(parser, args.conditions):
        x0 = _fresh(it, t0_k, p_atm, phi)
        reactor, net, ignition_s = _cantera_ignition(it, x0)
        net.advance(ignition_s + AFTER_S)
        reference = reactor.phase.Y[columns]
        for gate in args.gate:
            started = time.perf_counter()
            ours, ignition, after, cantera = gated_rollout(it, x0, gate, columns)
            errors = " ".join(f"{s} {100 * (a - b) / b:+.1f} %" for s, a, b in
                              zip(SPECIES, ours, reference))
            print(f"{t0_k:g} K, {p_atm:g} atm, phi {phi:g}, gate {gate:g}: +{AFTER_S * 1e3:g} ms "
                  f"{errors}; Cantera took {100 * cantera / max(after, 1):.1f} % of the {after} "
                  f"steps after ignition; ignition {ignition * 1e3:.2f} ms (Cantera "
                  f"{ignition_s * 1e3:.2f}); {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
