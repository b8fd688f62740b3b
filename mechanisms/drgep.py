"""DRG with error propagation (DRGEP, Pepiot-Desjardins & Pitsch 2008), as pyMARS computes it.

``r_AB = |Σ_i ν_A,i ω_i δ_B,i| / max(P_A, C_A)`` with ``P_A``/``C_A`` A's total production and
consumption rates; a species' importance is the largest product of coefficients along a path from
a target, maximised over targets and sampled states.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.drg import path_importance, reaction_terms


def drgep_matrix(gas: ct.Solution, state: np.ndarray) -> np.ndarray:
    """DRGEP direct interaction coefficients ``r[A, B]`` ``[ns, ns]`` in [0, 1]; diagonal 0."""
    rates, delta = reaction_terms(gas, state)
    numerator = np.abs(rates @ delta.T)
    production = np.maximum(rates, 0.0).sum(axis=1)
    consumption = np.maximum(-rates, 0.0).sum(axis=1)
    denominator = np.maximum(production, consumption)[:, np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denominator > 0, numerator / denominator, 0.0)
    np.fill_diagonal(r, 0.0)
    return np.clip(r, 0.0, 1.0)


def drgep_importance(gas: ct.Solution, states: np.ndarray, targets: list[str]) -> np.ndarray:
    """DRGEP overall interaction coefficients ``[ns]``: max over ``states`` ``[m, 2 + ns]`` and
    targets of the best path product."""
    sources = [gas.species_index(t) for t in targets]
    out = np.zeros(gas.n_species)
    for state in states:
        out = np.maximum(out, path_importance(drgep_matrix(gas, state), sources, "product"))
    return out
