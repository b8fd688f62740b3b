"""One constant-pressure Cantera step: each state advanced by exactly ``dt`` in an adiabatic reactor."""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.state import set_gas_state, state_of_gas, state_width

DEFAULT_RTOL = 1e-10
DEFAULT_ATOL = 1e-20
REACTOR_NAME = "IdealGasConstPressureReactor"


class Labeller:
    """Advances states by ``dt_s`` (s) in an adiabatic ``IdealGasConstPressureReactor``.

    Every state gets a reactor and integrator of its own (their set-up costs ~2 % of a step), so
    a label depends on nothing but the state: the same dataset comes out whatever order or
    process the states are labelled in.
    """

    def __init__(self, gas: ct.Solution, dt_s: float, rtol: float = DEFAULT_RTOL,
                 atol: float = DEFAULT_ATOL, max_steps: int = 20000):
        self.gas = gas
        self.dt_s = float(dt_s)
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps

    def advance(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input, target)`` rows for one state ``[T (K), P (Pa), Y...]``.

        ``input`` is the state as Cantera holds it (Y normalised), ``target`` the state ``dt_s``
        later. Raises ``ct.CanteraError`` when the integrator fails.
        """
        set_gas_state(self.gas, state)
        start = state_of_gas(self.gas)
        reactor = ct.IdealGasConstPressureReactor(self.gas, clone=False, energy="on")
        net = ct.ReactorNet([reactor])
        net.rtol = self.rtol
        net.atol = self.atol
        net.max_steps = self.max_steps
        net.advance(self.dt_s)
        return start, state_of_gas(self.gas)

    def label(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Label ``states`` ``[n, 2+ns]``; returns ``(inputs, targets, n_failed)``.

        States the integrator cannot advance (or that give non-finite results) are dropped and
        counted in ``n_failed``.
        """
        width = state_width(self.gas.n_species)
        inputs = np.empty((len(states), width))
        targets = np.empty((len(states), width))
        kept = 0
        for state in states:
            try:
                start, end = self.advance(state)
            except ct.CanteraError:
                continue
            if not (np.all(np.isfinite(end)) and np.all(np.isfinite(start))):
                continue
            inputs[kept] = start
            targets[kept] = end
            kept += 1
        return inputs[:kept], targets[:kept], len(states) - kept
