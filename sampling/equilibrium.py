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
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.state import mass_fractions, set_gas_state, state_of_gas, state_width


def draw_equilibrium_approach(gas: ct.Solution, base_states: np.ndarray, n: int,
                              rng: np.random.Generator, closest: float = 1e-3,
                              beyond_fraction: float = 0.5, per_base: int = 4) -> np.ndarray:
    """``[≤n, 2+ns]`` states near the HP equilibrium of randomly picked ``base_states``.

    ``closest``: the smallest ``|s|`` (fraction of the gap between a base state and its
    equilibrium); ``beyond_fraction``: the share of draws with ``s < 0``; ``per_base``: draws per
    equilibrium computation. Base states whose equilibrium Cantera cannot compute are skipped, so
    fewer than ``n`` rows may come back.
    """
    width = state_width(gas.n_species)
    out: list[np.ndarray] = []
    have = 0
    attempts = 0
    lo, hi = gas.min_temp + 1.0, gas.max_temp - 1.0
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
            y = np.clip(y_eq + si * gap, 0.0, None)
            try:
                gas.HPY = h, p, y / y.sum()
            except ct.CanteraError:
                continue
            if lo <= gas.T <= hi:
                out.append(state_of_gas(gas))
                have += 1
    return np.asarray(out).reshape(-1, width)


__all__ = ["draw_equilibrium_approach"]
