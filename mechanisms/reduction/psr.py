"""PSR extinction: the shortest residence time at which a perfectly stirred reactor still burns.

An adiabatic, constant-pressure stirred reactor (``IdealGasReactor`` fed by a mass-flow controller
at ``mass / τ`` from an inlet reservoir, a pressure controller to the exhaust) starts on the burning
branch from the inlet mixture's HP equilibrium at ``residence-time`` (τ0) and is driven to steady
state there. τ then shrinks by :data:`SWEEP_FACTOR` per step, each step starting from the last
burning state, until the reactor goes out; a bisection in log τ between the last burning and the
first extinguished residence time then narrows the turning point to :data:`RESOLUTION`. The answer
is the shortest residence time found burning. "Burning" means a steady temperature above the inlet
by more than :data:`BURNING_FRACTION` of the adiabatic rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cantera as ct
import numpy as np

from mechanisms.reactor import Tolerances
from mechanisms.reduction.config import Condition
from mechanisms.reduction.profiles import spread
from mechanisms.state import state_of_gas

SWEEP_FACTOR = 0.7
RESOLUTION = 0.002  # relative width of the final bracket: τ_ext is found within 0.2 %
BURNING_FRACTION = 0.2
STEADY_CHUNK = 2.0  # residence times integrated between two checks for a steady state
STEADY_CHANGE = 1e-5  # steady: T changed by less than this fraction over one chunk
STEADY_MAX_CHUNKS = 100
SHORTEST_TAU_S = 1e-8


@dataclass
class ExtinctionResult:
    """``residence_time_s`` at the extinction turning point (None when not found), ``status``
    (``"ok"``, ``"no-ignition"`` when it does not burn at τ0, ``"failed"`` when it never goes out),
    the burning steady states ``samples`` ``[SAMPLE_POINTS, 2 + ns]`` and the number of steady
    solves."""

    residence_time_s: float | None
    status: str
    message: str = ""
    samples: np.ndarray | None = None
    solves: int = 0


class _StirredReactor:
    """The reactor network of one condition, with its burning state saved and restored."""

    def __init__(self, gas: ct.Solution, cond: Condition, tolerances: Tolerances):
        gas.TPY = cond.temperature_k, cond.pressure_pa, cond.mass_fractions
        self.inlet = ct.Reservoir(gas, clone=True)
        self.t_inlet = cond.temperature_k
        gas.equilibrate("HP")
        self.t_rise = gas.T - cond.temperature_k
        self.exhaust = ct.Reservoir(gas, clone=True)
        self.reactor = ct.IdealGasReactor(gas, clone=False, energy="on", volume=1.0e-3)
        self.tau = cond.residence_time_s
        self.inflow = ct.MassFlowController(self.inlet, self.reactor,
                                            mdot=lambda _t: self.reactor.mass / self.tau)
        self.outflow = ct.PressureController(self.reactor, self.exhaust, primary=self.inflow, K=0.01)
        self.net = ct.ReactorNet([self.reactor])
        self.net.rtol, self.net.atol = tolerances.rtol, tolerances.atol
        self.solves = 0

    def steady(self, tau: float, start: np.ndarray) -> bool:
        """Drive the reactor to steady state at ``tau`` (s) from the full ``start`` state; burning?

        Integrated :data:`STEADY_CHUNK` residence times at a time until T stops changing
        (``ReactorNet.advance_to_steady_state`` stops early when the state drifts on the slow
        time scale of the flow, e.g. a reactor that cannot burn cooling down).
        """
        self.tau = tau
        self.reactor.phase.state = start
        self.reactor.syncState()
        self.net.reinitialize()
        self.solves += 1
        for _ in range(STEADY_MAX_CHUNKS):
            before = self.reactor.T
            self.net.advance(self.net.time + STEADY_CHUNK * tau)
            if abs(self.reactor.T - before) < STEADY_CHANGE * before:
                break
        return self.reactor.T - self.t_inlet > BURNING_FRACTION * self.t_rise

    def state(self) -> np.ndarray:
        return self.reactor.phase.state.copy()

    def row(self) -> np.ndarray:
        """The current state as ``[T (K), P (Pa), Y...]``."""
        return state_of_gas(self.reactor.phase)


def extinction_residence_time(gas: ct.Solution, cond: Condition, tolerances: Tolerances,
                              shortest_s: float = SHORTEST_TAU_S) -> ExtinctionResult:
    """The extinction residence time (s) of ``cond`` with ``gas``; see the module docstring.

    The sweep gives up below ``shortest_s`` (a candidate: the detailed value over the cap factor).
    Raises ``ct.CanteraError`` when the integrator fails.
    """
    psr = _StirredReactor(gas, cond, tolerances)
    burning = psr.state()
    tau_hi = cond.residence_time_s
    if not psr.steady(tau_hi, burning):
        return ExtinctionResult(None, "no-ignition", f"does not burn at τ = {tau_hi:.3g} s",
                                solves=psr.solves)
    burning = psr.state()
    rows = [psr.row()]
    tau_lo = None
    while tau_lo is None:
        tau = tau_hi * SWEEP_FACTOR
        if tau < shortest_s:
            return ExtinctionResult(None, "failed", f"still burning at τ = {tau_hi:.3g} s",
                                    samples=spread(np.array(rows)), solves=psr.solves)
        if psr.steady(tau, burning):
            tau_hi, burning = tau, psr.state()
            rows.append(psr.row())
        else:
            tau_lo = tau
    while tau_hi / tau_lo > 1.0 + RESOLUTION:
        tau = math.sqrt(tau_hi * tau_lo)
        if psr.steady(tau, burning):
            tau_hi, burning = tau, psr.state()
            rows.append(psr.row())
        else:
            tau_lo = tau
    return ExtinctionResult(tau_hi, "ok", samples=spread(np.array(rows)), solves=psr.solves)
