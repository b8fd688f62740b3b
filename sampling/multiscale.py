"""Multi-scale sampling (Zhang et al., Combust. Flame 2022), perturbation and the rate filter.

All functions take and return state arrays ``[n, 2+ns]`` (T in K, P in Pa, mass fractions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cantera as ct
import numpy as np

from mechanisms.state import (
    join_states,
    mass_fractions,
    normalise_mass_fractions,
    pressure,
    set_gas_state,
    temperature,
)

LOG_FLOOR = 1e-25


@dataclass
class ManifoldRanges:
    """Ranges of the manifold states, widened for multi-scale sampling.

    ``log_lo``/``log_up`` ``[ns]``: per-species log10 bounds
    (``lo = floor(min log10(Y + 1e-25)) − margin``, ``up = min(0, ceil(max log10(Y + 1e-25)))``);
    ``temperature_k``/``pressure_pa``: ``[min, max]``; ``diluents``: indices of species kept in
    their manifold mass-fraction range ``diluent_range`` ``[k, 2]`` instead of drawn log-uniformly.
    """

    log_lo: list[float]
    log_up: list[float]
    temperature_k: list[float]
    pressure_pa: list[float]
    diluents: list[int]
    diluent_range: list[list[float]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ManifoldRanges:
        return cls(**data)


def manifold_ranges(states: np.ndarray, diluents: list[int], margin_decades: float = 2.0
                    ) -> ManifoldRanges:
    """Ranges of manifold ``states`` ``[n, 2+ns]`` (see :class:`ManifoldRanges`)."""
    y = mass_fractions(states)
    log_y = np.log10(y + LOG_FLOOR)
    lo = np.floor(log_y.min(axis=0)) - margin_decades
    up = np.minimum(0.0, np.ceil(log_y.max(axis=0)))
    t_k, p_pa = temperature(states), pressure(states)
    return ManifoldRanges(
        log_lo=lo.tolist(), log_up=up.tolist(),
        temperature_k=[float(t_k.min()), float(t_k.max())],
        pressure_pa=[float(p_pa.min()), float(p_pa.max())],
        diluents=list(diluents),
        diluent_range=[[float(y[:, k].min()), float(y[:, k].max())] for k in diluents],
    )


def _draw_t_p(ranges: ManifoldRanges, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(T [n] K, P [n] Pa)``: T uniform and P log-uniform in the manifold's ranges."""
    t_lo, t_hi = ranges.temperature_k
    p_lo, p_hi = ranges.pressure_pa
    t_k = rng.uniform(t_lo, t_hi, n)
    p_pa = np.exp(rng.uniform(np.log(p_lo), np.log(p_hi), n))
    return t_k, p_pa


def _finish(t_k: np.ndarray, p_pa: np.ndarray, y: np.ndarray, ranges: ManifoldRanges,
            rng: np.random.Generator) -> np.ndarray:
    """Put diluents in their manifold range and scale the other species so that ΣY = 1."""
    n, ns = y.shape
    dil = np.zeros(ns, dtype=bool)
    dil[ranges.diluents] = True
    y[:, dil] = 0.0
    y_dil = np.zeros((n, ns))
    for k, (lo, hi) in zip(ranges.diluents, ranges.diluent_range):
        y_dil[:, k] = rng.uniform(lo, hi, n)
    dil_total = y_dil.sum(axis=1)
    if dil_total.max(initial=0.0) >= 1.0:
        y_dil *= (0.99 / np.maximum(dil_total, 1e-300))[:, None].clip(max=1.0)
        dil_total = y_dil.sum(axis=1)
    others = y.sum(axis=1)
    y *= ((1.0 - dil_total) / np.maximum(others, 1e-300))[:, None]
    y += y_dil
    return join_states(t_k, p_pa, y)


def draw_multiscale(ranges: ManifoldRanges, n: int, level_start: float, level_stop: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` multi-scale states.

    The whole draw of ``N`` samples is split into ``up − lo`` batches per species; batch ``k``
    draws the exponent from ``U(lo + k, up)``, so that every decade down to ``lo`` is covered.
    This call draws the samples whose position in the whole draw lies in
    ``[level_start, level_stop)`` (fractions of ``N``), so that tasks can split one draw.
    """
    lo = np.asarray(ranges.log_lo)
    up = np.asarray(ranges.log_up)
    position = level_start + (level_stop - level_start) * (np.arange(n) + rng.random(n)) / n
    batches = np.maximum(up - lo, 1.0)
    k = np.floor(position[:, None] * batches[None, :])
    low = np.minimum(lo[None, :] + k, up[None, :])
    exponent = low + (up[None, :] - low) * rng.random((n, len(lo)))
    y = 10.0 ** exponent
    t_k, p_pa = _draw_t_p(ranges, n, rng)
    return _finish(t_k, p_pa, y, ranges, rng)


def draw_log_uniform(ranges: ManifoldRanges, n: int, rng: np.random.Generator,
                     margin_decades: float = 0.0) -> np.ndarray:
    """Draw ``n`` states with log10(Y) uniform in the manifold box (EMCS's Monte Carlo step).

    ``margin_decades`` narrows the lower bounds back by the widening the ranges carry, so that
    the box is that of the manifold itself.
    """
    lo = np.asarray(ranges.log_lo) + margin_decades
    up = np.asarray(ranges.log_up)
    lo = np.minimum(lo, up)
    y = 10.0 ** (lo + (up - lo) * rng.random((n, len(lo))))
    t_k, p_pa = _draw_t_p(ranges, n, rng)
    return _finish(t_k, p_pa, y, ranges, rng)


def perturb(states: np.ndarray, alpha: float, temperature_span_k: float,
            rng: np.random.Generator, temperature_bounds_k: tuple[float, float]) -> np.ndarray:
    """Perturb manifold states: ``T' = T + ΔT·α·U(−1,1)``, ``Y' = Y^(1+α·U(−1,1))``, ΣY' = 1.

    ``temperature_span_k`` is ΔT (the manifold's temperature span); ``T'`` is clipped to
    ``temperature_bounds_k`` (the mechanism's thermo range). Returns a new array.
    """
    out = states.copy()
    t_k, y = temperature(out), mass_fractions(out)
    t_k += temperature_span_k * alpha * rng.uniform(-1.0, 1.0, len(out))
    np.clip(t_k, *temperature_bounds_k, out=t_k)
    y[...] = np.clip(y, 0.0, None) ** (1.0 + alpha * rng.uniform(-1.0, 1.0, y.shape))
    return normalise_mass_fractions(out)


@dataclass
class RateLimits:
    """Largest reaction rates seen on the manifold.

    ``heat_release_w_m3``: max |heat-release rate| (W/m³); ``species_rate_s``: max over species
    and states of |dY_k/dt| (1/s). The filter drops a sample above ``factor`` times either.
    """

    heat_release_w_m3: float
    species_rate_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RateLimits:
        return cls(**data)


def reaction_rates(gas: ct.Solution, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|heat-release rate| [W/m³], max_k |dY_k/dt| [1/s])`` for each state, both ``[n]``.

    States Cantera cannot evaluate get NaN.
    """
    hrr = np.full(len(states), np.nan)
    dydt = np.full(len(states), np.nan)
    weights = gas.molecular_weights
    for i, state in enumerate(states):
        try:
            set_gas_state(gas, state)
            hrr[i] = abs(gas.heat_release_rate)
            dydt[i] = np.max(np.abs(gas.net_production_rates * weights)) / gas.density
        except ct.CanteraError:
            continue
    return hrr, dydt


def rate_limits(gas: ct.Solution, states: np.ndarray) -> RateLimits:
    """The :class:`RateLimits` of manifold ``states``."""
    hrr, dydt = reaction_rates(gas, states)
    return RateLimits(float(np.nanmax(hrr, initial=0.0)), float(np.nanmax(dydt, initial=0.0)))


def rate_filter(gas: ct.Solution, states: np.ndarray, limits: RateLimits | None,
                factor: float | None) -> np.ndarray:
    """Boolean mask ``[n]`` of states whose rates lie within ``factor`` × the manifold's.

    ``limits`` or ``factor`` of ``None`` keeps everything; states Cantera cannot evaluate are
    dropped.
    """
    if limits is None or factor is None:
        return np.ones(len(states), dtype=bool)
    hrr, dydt = reaction_rates(gas, states)
    with np.errstate(invalid="ignore"):
        return (hrr <= factor * limits.heat_release_w_m3) & (dydt <= factor * limits.species_rate_s)
