"""Cantera reactors in one place: the network set-up, its tolerances, one step and a trajectory.

Every reactor deepkin runs is adiabatic and ideal-gas, constant pressure unless a reduction target
asks for constant volume. The tolerances of each use are named here, so that a label, the
integrator's Cantera fallback and a validation reference agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cantera as ct
import numpy as np

from mechanisms.state import normalise_mass_fractions, set_gas_state, state_of_gas, state_width


@dataclass(frozen=True)
class Tolerances:
    """Relative and absolute tolerances of Cantera's CVODES integrator."""

    rtol: float
    atol: float


LABEL_TOLERANCES = Tolerances(1e-6, 1e-16)
"""Dataset labels. Chosen by the study in docs/sampling.md ("Label tolerances";
``benchmarks/label_tolerances.py``): on GRI-3.0 methane rows of every source, one 5 µs step,
against rtol 1e-12 / atol 1e-24 labels, |ΔT| ≤ 3e-3 K (p99 2.2e-4 K) and a mean error in what the
networks learn (the L1 quantity) of 7.8e-4, 190× below the shipped ch4-air network's own error
and ≥ 15× below it on every source; 3.2× fewer right-hand-side evaluations than the former
1e-10 / 1e-20."""
REFERENCE_TOLERANCES = Tolerances(1e-10, 1e-20)
"""Validation references: the adaptive trajectories a surrogate's rollout is judged against."""
PROFILE_TOLERANCES = Tolerances(1e-9, 1e-20)
"""Manifold autoignition profiles (the solver's own dense steps are the profile)."""
EVOLVE_TOLERANCES = Tolerances(1e-8, 1e-20)
"""EMCS: sampled states evolved along their own trajectories."""
CFD_TOLERANCES = Tolerances(1e-6, 1e-15)
"""What a CFD code's stiff chemistry typically uses: the speed baselines."""
FALLBACK_TOLERANCES = CFD_TOLERANCES
"""The integrator's Cantera fallback: what the CFD code would have used for the cell (2–3× faster
than the label tolerances; over one 1 µs step of an H2/air flame's cells T differs from theirs by
< 1e-4 K and Y by < 1e-8, far below the network's own error)."""
REACTOR_NAME = "IdealGasConstPressureReactor"
MAX_STEPS = 20000  # CVODES steps allowed within one advance


def reactor_network(gas: ct.Solution, tolerances: Tolerances = REFERENCE_TOLERANCES,
                    constant_volume: bool = False, max_steps: int | None = MAX_STEPS,
                    max_time_step_s: float | None = None) -> tuple[ct.Reactor, ct.ReactorNet]:
    """An adiabatic reactor on ``gas`` (not a copy: the reactor moves ``gas``'s state) and its net.

    Constant pressure (``IdealGasConstPressureReactor``) unless ``constant_volume``.
    """
    kind = ct.IdealGasReactor if constant_volume else ct.IdealGasConstPressureReactor
    reactor = kind(gas, clone=False, energy="on")
    net = ct.ReactorNet([reactor])
    net.rtol = tolerances.rtol
    net.atol = tolerances.atol
    if max_steps is not None:
        net.max_steps = max_steps
    if max_time_step_s is not None:
        net.max_time_step = max_time_step_s
    return reactor, net


def restart(reactor: ct.Reactor, net: ct.ReactorNet, state: np.ndarray) -> None:
    """Put ``state`` ``[T (K), P (Pa), Y...]`` into a reused reactor and restart its net at t = 0.

    This is how a CFD code steps cells (one reactor per process); it saves the set-up of a fresh
    reactor per state.
    """
    set_gas_state(reactor.phase, state)
    reactor.syncState()
    net.initial_time = 0.0


class ReactorStep:
    """Advances states by ``dt_s`` (s) in an adiabatic constant-pressure reactor.

    By default every state gets a reactor and integrator of its own (their set-up costs ~2 % of a
    label step, ~7 % of a step at CFD tolerances), so that a result depends on nothing but the
    state: a dataset comes out the same whatever order or process its states are labelled in, and
    the integrator's fallback gives a cell the same bits whatever it stepped before. ``reuse=True``
    keeps one reactor and restarts it per state (see :func:`restart`), the way a CFD code steps
    cells: the speed baseline. A reused reactor's results depend in the last bits (~1e-14
    relative, Cantera 3.2) on the states it stepped before.
    """

    def __init__(self, gas: ct.Solution, dt_s: float, tolerances: Tolerances = LABEL_TOLERANCES,
                 max_steps: int = MAX_STEPS, reuse: bool = False):
        self.gas = gas
        self.dt_s = float(dt_s)
        self.tolerances = tolerances
        self.max_steps = max_steps
        self._reused = reactor_network(gas, tolerances, max_steps=max_steps) if reuse else None
        self.last_net: ct.ReactorNet | None = None

    def advance(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input, target)`` rows for one state ``[T (K), P (Pa), Y...]``.

        ``input`` is the state as Cantera holds it (Y normalised), ``target`` the state ``dt_s``
        later (Y clipped at 0 and normalised). Raises ``ct.CanteraError`` when the integrator
        fails.
        """
        if self._reused is not None:
            reactor, net = self._reused
            restart(reactor, net, state)
        else:
            set_gas_state(self.gas, state)
            reactor, net = reactor_network(self.gas, self.tolerances, max_steps=self.max_steps)
        self.last_net = net  # its solver_stats describe this step's work
        start = state_of_gas(self.gas)
        net.advance(self.dt_s)
        end = state_of_gas(self.gas)
        # CVODES keeps ΣY = 1 only to its tolerance (~1e-7 at rtol 1e-6): the row is put back on
        # it (and tiny negative Y clipped), as every network step and Box-Cox transform does.
        normalise_mass_fractions(end[None, :])
        return start, end

    def advance_all(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Advance ``states`` ``[n, 2+ns]``; returns ``(inputs, targets, n_failed)``.

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


UNCHANGED_RTOL = 1e-12
"""A followed cell whose T, P and Y each differ from what was returned for it by no more than
this relative (``UNCHANGED_ATOL`` absolute in Y) was not changed by anything but round-off."""
UNCHANGED_ATOL = 1e-15


def _unchanged(last: np.ndarray, state: np.ndarray) -> bool:
    return bool(np.all(np.abs(state - last) <= UNCHANGED_ATOL + UNCHANGED_RTOL * np.abs(last)))


class FollowedCells:
    """Steps of ``dt_s`` for cells that come back call after call (a rollout), each on a reactor
    of its own that goes on from where it stopped.

    :meth:`advance` ``(key, state)``: when ``state`` is the state this object returned for
    ``key`` last time, to round-off (:data:`UNCHANGED_RTOL`: nothing but a caller's
    renormalisation touched the cell since), its reactor is not restarted: CVODES
    keeps its step size, order and history and integrates on to the next output time, as one
    uninterrupted trajectory. A 0D rollout's slow-induction cells, stepped by Cantera for up to
    ~10^5 steps in a row, cost a restart each otherwise (~0.55 ms a 5 µs step of GRI-3.0 at the
    fallback tolerances, most of it CVODES starting again from order 1 and tiny steps). Any other
    state restarts the key's reactor from it. The result is the same ODE solution to the
    tolerances; unlike :class:`ReactorStep`, it depends on what the key was given before.

    ``make_gas`` builds a new ``ct.Solution`` of the mechanism (one per followed key, made when
    the key first falls back: on GRI-3.0 ~3.7 MiB and ~50 ms each). Keys beyond ``max_cells``
    are not followed:
    :meth:`advance` returns None for them and the caller steps them as before.
    """

    def __init__(self, make_gas: Callable[[], ct.Solution], dt_s: float,
                 tolerances: Tolerances = FALLBACK_TOLERANCES, max_cells: int = 64,
                 max_steps: int = MAX_STEPS):
        self.make_gas = make_gas
        self.dt_s = float(dt_s)
        self.tolerances = tolerances
        self.max_cells = int(max_cells)
        self.max_steps = max_steps
        # key -> [reactor, net, steps taken since its restart, the state last returned]
        self._cells: dict[int, list] = {}
        self.n_continued = 0  # steps that went on without a restart
        self.n_restarted = 0

    def advance(self, key: int, state: np.ndarray) -> np.ndarray | None:
        """``state`` ``[T (K), P (Pa), Y...]`` advanced by ``dt_s`` (Y clipped at 0 and
        normalised, a new array), or None for a key beyond ``max_cells``. Raises
        ``ct.CanteraError`` when the integrator fails (the key is then restarted next time)."""
        cell = self._cells.get(key)
        if cell is None:
            if len(self._cells) >= self.max_cells:
                return None
            reactor, net = reactor_network(self.make_gas(), self.tolerances,
                                           max_steps=self.max_steps)
            cell = self._cells[key] = [reactor, net, 0, None]
        reactor, net, steps, last = cell
        if last is not None and _unchanged(last, state):
            self.n_continued += 1
        else:
            restart(reactor, net, state)
            steps = 0
            self.n_restarted += 1
        cell[3] = None  # a failure below leaves the key to restart
        net.advance((steps + 1) * self.dt_s)  # whole multiples: no drift in the output times
        end = state_of_gas(reactor.phase)
        end[1] = state[1]  # constant pressure: P as given, not as recomputed from the density
        normalise_mass_fractions(end[None, :])
        cell[2], cell[3] = steps + 1, end.copy()
        return end


def trajectory(gas: ct.Solution, state: np.ndarray, t_end_s: float,
               tolerances: Tolerances = REFERENCE_TOLERANCES) -> tuple[np.ndarray, np.ndarray]:
    """Integrate from ``state`` to ``t_end_s`` (s) with the solver's own steps.

    Returns ``(times [m] in s, states [m, 2+ns])``, the first row being ``state`` as Cantera holds
    it. Raises ``ct.CanteraError`` when the integrator fails.
    """
    set_gas_state(gas, state)
    _, net = reactor_network(gas, tolerances, max_steps=None)
    times, states = [0.0], [state_of_gas(gas)]
    while net.time < t_end_s:
        net.step()
        times.append(net.time)
        states.append(state_of_gas(gas))
    return np.asarray(times), np.asarray(states)
