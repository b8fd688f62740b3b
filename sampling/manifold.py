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
                       y0: np.ndarray, width_m: float = 0.03, transport: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A freely propagating premixed flame with Cantera's ``transport`` model (default: the
    phase's own); returns ``(z [m], states, heat-release rate [W/m³])``. The phase's transport
    model is restored afterwards."""
    previous = gas.transport_model
    try:
        if transport and transport != previous:
            gas.transport_model = transport
        gas.TPY = temperature_k, pressure_pa, y0
        flame = ct.FreeFlame(gas, width=width_m)
        flame.set_refine_criteria(ratio=3.0, slope=0.08, curve=0.16)
        flame.solve(loglevel=0, auto=True)
        return flame.grid.copy(), _flame_states(flame), np.abs(flame.heat_release_rate)
    finally:
        if gas.transport_model != previous:
            gas.transport_model = previous


def counterflow_profile(gas: ct.Solution, fuel_y: np.ndarray, oxidizer_y: np.ndarray,
                        pressure_pa: float, strain_rate_s: float, fuel_temperature_k: float = 300.0,
                        oxidizer_temperature_k: float = 300.0, width_m: float = 0.02
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A counterflow diffusion flame at global strain rate ``strain_rate_s`` (1/s).

    Inlet velocities are set so that the jets' momenta balance and
    ``a = 2 (u_o + u_f √(ρ_f/ρ_o)) / L``. Returns ``(z [m], states, heat-release rate [W/m³])``.
    """
    flame = _counterflow_flame(gas, fuel_y, oxidizer_y, pressure_pa, strain_rate_s,
                               fuel_temperature_k, oxidizer_temperature_k, width_m)
    return flame.grid.copy(), _flame_states(flame), np.abs(flame.heat_release_rate)


def _counterflow_flame(gas, fuel_y, oxidizer_y, pressure_pa, strain_rate_s, fuel_temperature_k,
                       oxidizer_temperature_k, width_m) -> ct.CounterflowDiffusionFlame:
    """The solved counterflow flame of :func:`counterflow_profile`."""
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
    return flame


def counterflow_sweep(gas: ct.Solution, fuel_y: np.ndarray, oxidizer_y: np.ndarray,
                      pressure_pa: float, strain_rate_s: float, fuel_temperature_k: float = 300.0,
                      oxidizer_temperature_k: float = 300.0, width_m: float = 0.02,
                      factor: float = 2.0, tolerance: float = 0.05, max_flames: int = 60
                      ) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Counterflow diffusion flames from global strain ``strain_rate_s`` (1/s) to extinction.

    The first flame is :func:`counterflow_profile`'s; each next one is solved from the last with
    the strain raised by ``factor`` (the scaling of Fiala & Sattelmayer as Cantera's extinction
    example uses it: grid ∝ a^−1/2, inlet mass fluxes and velocity ∝ a^1/2, spread rate ∝ a,
    pressure-curvature eigenvalue ∝ a²). A flame that does not converge or no longer burns (peak
    T below the hotter inlet + 400 K) is discarded and the factor taken to its square root; the
    sweep ends when a factor of at most 1 + ``tolerance`` failed: the last flame kept then lies
    within that fraction of the extinction strain (of the strain beyond which continuation finds
    no burning flame). Returns ``[(strain (1/s), z [m], states, heat-release rate [W/m³]), …]``,
    lowest strain first; ``max_flames`` bounds the sweep.
    """
    flame = _counterflow_flame(gas, fuel_y, oxidizer_y, pressure_pa, strain_rate_s,
                               fuel_temperature_k, oxidizer_temperature_k, width_m)
    burning_k = max(fuel_temperature_k, oxidizer_temperature_k) + IGNITION_RISE_K
    out = [(strain_rate_s, flame.grid.copy(), _flame_states(flame),
            np.abs(flame.heat_release_rate))]
    if flame.T.max() < burning_k:
        return out
    strain = strain_rate_s
    good = _saved(flame)
    attempts = 0
    while len(out) < max_flames and attempts < 4 * max_flames:
        attempts += 1
        _scale_counterflow(flame, factor)
        try:
            flame.solve(loglevel=0, auto=False)
            burning = bool(flame.T.max() >= burning_k)
        except ct.CanteraError:
            burning = False
        if burning:
            strain *= factor
            good = _saved(flame)
            out.append((strain, flame.grid.copy(), _flame_states(flame),
                        np.abs(flame.heat_release_rate)))
        else:
            _restore(flame, good)
            if factor <= 1.0 + tolerance:
                break  # a step of at most the tolerance put the flame out
            factor = float(np.sqrt(factor))
    return out


def _saved(flame: ct.CounterflowDiffusionFlame) -> tuple:
    """The solution and the inlet mass fluxes (kg/m²/s; ``to_array`` does not restore them)."""
    return flame.to_array(), flame.fuel_inlet.mdot, flame.oxidizer_inlet.mdot


def _restore(flame: ct.CounterflowDiffusionFlame, saved: tuple) -> None:
    solution, flame.fuel_inlet.mdot, flame.oxidizer_inlet.mdot = saved
    flame.from_array(solution)


def _scale_counterflow(flame: ct.CounterflowDiffusionFlame, factor: float) -> None:
    """Scale a solved counterflow flame's grid, inlets and profiles to ``factor`` × its strain."""
    import warnings

    grid = flame.grid.copy()
    flame.flame.grid = grid * factor ** -0.5
    flame.fuel_inlet.mdot *= factor ** 0.5
    flame.oxidizer_inlet.mdot *= factor ** 0.5
    where = grid / grid[-1]
    with warnings.catch_warnings():  # Sim1D.set_profile is deprecated in favour of the domain's
        warnings.simplefilter("ignore", DeprecationWarning)
        flame.set_profile("velocity", where, flame.velocity * factor ** 0.5)
        flame.set_profile("spread_rate", where, flame.spread_rate * factor)
        flame.set_profile("lambda", where, flame.L * factor ** 2)


def _flame_states(flame: ct.FlameBase) -> np.ndarray:
    return join_states(flame.T, np.full(len(flame.grid), flame.P), flame.Y.T)
