"""Equilibrium-approach sampling: states on both sides of each manifold state's equilibrium.

A surrogate that is rolled out for thousands of steps ends where its predicted rates vanish. If
its training states approach equilibrium from one side only (burning mixtures recombine from
the radical-rich side), nothing pins that zero crossing, and the rollout settles tens of kelvin
away from Cantera's equilibrium — most at low pressure, where recombination is slowest and the
rates near equilibrium are smallest. This source brackets the crossing.

For a manifold state ``x`` (T, P, Y) with enthalpy ``h``, Cantera's HP equilibrium at the same
``h`` and P gives ``Y_eq``. Drawn states lie on the line through both compositions,

    Y = Y_eq + s · (Y_x − Y_eq),  T from h(T, Y) = h at P,

with ``|s|`` log-uniform in [``closest``, 1]: ``s > 0`` lies between the manifold state and
equilibrium, ``s < 0`` beyond equilibrium (over-recombined, hotter than T_eq), as far as every Y
stays ≥ 0. Every drawn state keeps the manifold state's element composition and enthalpy exactly
(both are linear in Y), so it is a state the adiabatic system could be in.

On that line every species is the same fraction of its way to equilibrium. A surrogate rolled
out in a flame leaves the line: its hydrogen–oxygen pool (H, OH, H2, H2O) recombines faster than
its CO oxidises, say, and burnt gas then sits where no training state lies, with rates the
network has never seen (a methane flame's burnt gas stalled 28 K low that way). ``spread`` > 0
gives each species its own fraction, ``s_k = s · exp(spread · N(0, 1))``, and then restores the
element composition by the least change of the species that are off equilibrium:

    Y' = Y_eq + s_k · gap_k,   Y = Y' − W Aᵀ (A W Aᵀ)⁺ A (Y' − Y_x),   W = diag |gap|,

(A: element mass fractions per unit Y), the move off the line shortened where a Y would fall
below 0, so the state keeps the manifold state's elements and its enthalpy.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.state import (
    element_mass_matrix,
    mass_fractions,
    set_gas_state,
    state_of_gas,
    state_width,
)


def draw_equilibrium_approach(gas: ct.Solution, base_states: np.ndarray, n: int,
                              rng: np.random.Generator, closest: float = 1e-3,
                              beyond_fraction: float = 0.5, per_base: int = 4,
                              spread: float = 0.0) -> np.ndarray:
    """``[≤n, 2+ns]`` states near the HP equilibrium of randomly picked ``base_states``.

    ``closest``: the smallest ``|s|`` (fraction of the gap between a base state and its
    equilibrium); ``beyond_fraction``: the share of draws with ``s < 0``; ``per_base``: draws per
    equilibrium computation; ``spread``: the standard deviation of each species' own log-fraction
    of the way (0: every species on the line). Base states whose equilibrium Cantera cannot
    compute are skipped, so fewer than ``n`` rows may come back.
    """
    width = state_width(gas.n_species)
    out: list[np.ndarray] = []
    have = 0
    attempts = 0
    lo, hi = gas.min_temp + 1.0, gas.max_temp - 1.0
    elements = element_mass_matrix(gas) if spread > 0 else None
    while have < n and attempts < 4 * n + 16:
        attempts += 1
        base = base_states[rng.integers(0, len(base_states))]
        try:
            set_gas_state(gas, base)
            h, p = gas.enthalpy_mass, gas.P
            gas.equilibrate("HP")
            y_eq = gas.Y.copy()
        except ct.CanteraError:
            continue
        gap = mass_fractions(base) - y_eq
        if not np.any(np.abs(gap) > 1e-12):
            continue  # already at equilibrium: the settled manifold rows hold it
        k = min(per_base, n - have)
        size = closest ** rng.uniform(0.0, 1.0, k)  # |s| log-uniform in [closest, 1]
        beyond = rng.random(k) < beyond_fraction
        # How far past equilibrium every Y stays >= 0: s ≥ −min over gap_k > 0 of Y_eq,k / gap_k.
        positive = gap > 0
        reach = float(np.min(y_eq[positive] / gap[positive])) if positive.any() else 1.0
        s = np.where(beyond, -size * min(reach, 1.0), size)
        for si in s:
            y = y_eq + si * gap if elements is None else \
                _off_line(y_eq, gap, si, spread, elements, rng)
            y = np.clip(y, 0.0, None)
            try:
                gas.HPY = h, p, y / y.sum()
            except ct.CanteraError:
                continue
            if lo <= gas.T <= hi:
                out.append(state_of_gas(gas))
                have += 1
    return np.asarray(out).reshape(-1, width)


def _off_line(y_eq: np.ndarray, gap: np.ndarray, s: float, spread: float,
              elements: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The line's state ``y_eq + s·gap`` moved off the line: each species its own fraction
    ``s_k`` of the way, the element mass fractions restored by the least weighted change (weights
    ``|gap|``, so species already at equilibrium stay there), the move shortened to keep every
    Y >= 0."""
    y_line = y_eq + s * gap
    factor = np.exp(spread * rng.standard_normal(len(gap)))
    y = y_eq + s * factor * gap
    weight = np.abs(gap)
    residual = elements @ (y - y_line)
    awa = (elements * weight) @ elements.T
    correction = weight * (elements.T @ (np.linalg.pinv(awa) @ residual))
    # The move off the line conserves the elements; shorten it as far as every Y stays >= 0
    # (the line's own states are >= 0), so the elements stay exact.
    move = y - correction - y_line
    shrinking = move < 0
    reach = float(np.min(np.maximum(y_line[shrinking], 0.0) / -move[shrinking])) \
        if shrinking.any() else 1.0
    return y_line + min(reach, 1.0) * move


__all__ = ["draw_equilibrium_approach"]
