"""Independent check of a reduced methane mechanism: plain Cantera, none of deepkin's code.

Loads the reduced YAML from disk and GRI-3.0, computes the constant-volume ignition delay
(first T >= T0 + 400 K, linear interpolation in the step) at the 36 conditions of
docs/examples/reduce-gri30-methane.yaml with tighter tolerances than the reduction used
(rtol 1e-9), and prints the max and mean relative error and the equilibrium-temperature gap.

    python benchmarks/reduction_independent_check.py reduced-ch4/deepmr.yaml
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import cantera as ct
import numpy as np

TEMPERATURES_K = (1000.0, 1200.0, 1400.0, 1600.0)
PRESSURES_ATM = (1.0, 11.0, 21.0)
PHIS = (0.5, 1.0, 1.5)


def ignition_delay(gas: ct.Solution, t0: float, p_atm: float, phi: float, rtol: float) -> float:
    """Constant-volume ignition delay (s); NaN when T0 + 400 K is not reached within 10 s."""
    gas.set_equivalence_ratio(phi, "CH4:1", "O2:1,N2:3.76")
    gas.TP = t0, p_atm * ct.one_atm
    reactor = ct.IdealGasReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = rtol, 1e-18
    t_prev, temp_prev = 0.0, t0
    while net.time < 10.0:
        t = net.step()
        if reactor.T >= t0 + 400.0:
            return t_prev + (t0 + 400.0 - temp_prev) * (t - t_prev) / (reactor.T - temp_prev)
        t_prev, temp_prev = t, reactor.T
    return float("nan")


def equilibrium_temperature(gas: ct.Solution, t0: float, p_atm: float, phi: float) -> float:
    gas.set_equivalence_ratio(phi, "CH4:1", "O2:1,N2:3.76")
    gas.TP = t0, p_atm * ct.one_atm
    with warnings.catch_warnings():  # hot mixtures end a few K above the NASA-7 fits' 3000 K
        warnings.simplefilter("ignore", UserWarning)
        gas.equilibrate("UV")
    return gas.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reduced", help="reduced mechanism YAML")
    parser.add_argument("--rtol", type=float, default=1e-9)
    args = parser.parse_args()
    started = time.perf_counter()
    detailed = ct.Solution("gri30.yaml")
    reduced = ct.Solution(args.reduced)
    errors, gaps = [], []
    for t0, p, phi in itertools.product(TEMPERATURES_K, PRESSURES_ATM, PHIS):
        ref = ignition_delay(detailed, t0, p, phi, args.rtol)
        red = ignition_delay(reduced, t0, p, phi, args.rtol)
        errors.append(abs(red - ref) / ref if np.isfinite(red) else 1.0)
        gaps.append(equilibrium_temperature(reduced, t0, p, phi)
                    - equilibrium_temperature(detailed, t0, p, phi))
    errors = np.array(errors)
    worst = int(np.argmax(errors))
    t0, p, phi = list(itertools.product(TEMPERATURES_K, PRESSURES_ATM, PHIS))[worst]
    print(f"{args.reduced}: {reduced.n_species} species, {reduced.n_reactions} reactions")
    print(f"ignition delay over 36 conditions (rtol {args.rtol:g}): max error {100 * errors.max():.2f} % "
          f"(T0={t0:g} K, P={p:g} atm, phi={phi:g}), mean {100 * errors.mean():.2f} %")
    print(f"equilibrium temperature (UV): max |dT| {np.max(np.abs(gaps)):.1f} K; "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
