"""Canonical "manifold" cases: 0D autoignition, 1D free premixed flames, counterflow flames.

Each function runs one Cantera case and returns a profile ``(coordinate, states, activity)``:
``coordinate`` ``[m]`` (time in s or position in m), ``states`` ``[m, 2+ns]`` and ``activity``
``[m]`` (|dT/dt| in K/s or heat-release rate in W/m³), for :func:`draw_along_profile`.
Cantera failures propagate as ``ct.CanteraError``; the task turns them into a status.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.ignition import IGNITION_RISE_K
from mechanisms.reactor import PROFILE_TOLERANCES, Tolerances, reactor_network
from mechanisms.state import join_states, state_of_gas


def autoignition_profile(gas: ct.Solution, temperature_k: float, pressure_pa: float,
                         y0: np.ndarray, t_max_s: float = 0.1,
                         tolerances: Tolerances = PROFILE_TOLERANCES, max_points: int = 200000,
                         settle_k: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adiabatic constant-pressure autoignition from ``(T0, P, Y0)``.

    Integrates with the solver's own steps (dense where the chemistry is fast) through ignition
    (T first above T0 + 400 K) and on through recombination until the state has settled:
    at least three ignition delays and until T would change by less than ``settle_k`` over the
    time elapsed (|dT/dt|·t < settle_k), or until ``t_max_s`` (s). Returns
    ``(t [s], states, |dT/dt| [K/s])``.
    """
    gas.TPY = temperature_k, pressure_pa, y0
    _, net = reactor_network(gas, tolerances, max_steps=None, max_time_step_s=t_max_s / 500.0)
    times = [0.0]
    states = [state_of_gas(gas)]
    rates = [abs(gas.heat_release_rate / (gas.density * gas.cp_mass))]
    t_ignition = None
    while net.time < t_max_s and len(times) < max_points:
        t = net.step()
        times.append(t)
        states.append(state_of_gas(gas))
        rate = abs(gas.heat_release_rate / (gas.density * gas.cp_mass))
        rates.append(rate)
        if t_ignition is None and gas.T >= temperature_k + IGNITION_RISE_K:
            t_ignition = t
        if t_ignition is not None and t >= 3.0 * t_ignition and rate * t < settle_k:
            break
    return np.asarray(times), np.asarray(states), np.asarray(rates)


def log_time(times: np.ndarray) -> np.ndarray:
    """A log-time coordinate for :func:`draw_along_profile`'s uniform part: every decade of
    time from the first solver step on weighs the same."""
    first = times[1] if len(times) > 1 and times[1] > 0 else 1e-12
    return np.log(times + first)


def free_flame_profile(gas: ct.Solution, temperature_k: float, pressure_pa: float,
                       y0: np.ndarray, width_m: float = 0.03
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A freely propagating premixed flame; returns ``(z [m], states, heat-release rate [W/m³])``."""
    gas.TPY = temperature_k, pressure_pa, y0
    flame = ct.FreeFlame(gas, width=width_m)
    flame.set_refine_criteria(ratio=3.0, slope=0.08, curve=0.16)
    flame.solve(loglevel=0, auto=True)
    return flame.grid.copy(), _flame_states(flame), np.abs(flame.heat_release_rate)


def counterflow_profile(gas: ct.Solution, fuel_y: np.ndarray, oxidizer_y: np.ndarray,
                        pressure_pa: float, strain_rate_s: float, fuel_temperature_k: float = 300.0,
                        oxidizer_temperature_k: float = 300.0, width_m: float = 0.02
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A counterflow diffusion flame at global strain rate ``strain_rate_s`` (1/s).

    Inlet velocities are set so that the jets' momenta balance and
    ``a = 2 (u_o + u_f √(ρ_f/ρ_o)) / L``. Returns ``(z [m], states, heat-release rate [W/m³])``.
    """
    gas.TPY = oxidizer_temperature_k, pressure_pa, oxidizer_y
    rho_o = gas.density
    gas.TPY = fuel_temperature_k, pressure_pa, fuel_y
    rho_f = gas.density
    u_o = strain_rate_s * width_m / 4.0
    u_f = u_o * np.sqrt(rho_o / rho_f)
    flame = ct.CounterflowDiffusionFlame(gas, width=width_m)
    flame.P = pressure_pa
    flame.fuel_inlet.Y = fuel_y
    flame.fuel_inlet.T = fuel_temperature_k
    flame.fuel_inlet.mdot = rho_f * u_f
    flame.oxidizer_inlet.Y = oxidizer_y
    flame.oxidizer_inlet.T = oxidizer_temperature_k
    flame.oxidizer_inlet.mdot = rho_o * u_o
    flame.set_refine_criteria(ratio=3.0, slope=0.1, curve=0.2, prune=0.03)
    flame.solve(loglevel=0, auto=True)
    return flame.grid.copy(), _flame_states(flame), np.abs(flame.heat_release_rate)


def _flame_states(flame: ct.FlameBase) -> np.ndarray:
    return join_states(flame.T, np.full(len(flame.grid), flame.P), flame.Y.T)
