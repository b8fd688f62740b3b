"""Path Flux Analysis (PFA, Sun, Chen, Gou & Ju 2010), as pyMARS computes it.

With ``P_A``/``C_A`` the total production/consumption of A and ``P_AB``/``C_AB`` the part of it in
reactions that involve B, the first-generation coefficients are ``r1p_AB = P_AB / max(P_A, C_A)``
and ``r1c_AB = C_AB / max(P_A, C_A)``; the second generation goes through one intermediate M,
``r2p_AB = Σ_M r1p_AM r1p_MB`` (likewise for consumption), and ``r_AB`` is the sum of the four
(clipped to 1, which changes no model: a path is worth at most its source's 1). A species is kept
at threshold ε when a path of edges ``r ≥ ε`` reaches it from a target, the same graph search as DRG.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.reduction.drg import coefficient_matrix, graph_importance, reaction_terms
from mechanisms.reduction.method import MethodInputs, MethodOutcome
from mechanisms.reduction.threshold_search import reduce_by_threshold


def pfa_matrix(gas: ct.Solution, state: np.ndarray) -> np.ndarray:
    """PFA interaction coefficients ``r[A, B]`` ``[ns, ns]`` in [0, 1] at one state; diagonal 0."""
    rates, delta = reaction_terms(gas, state)
    production = np.maximum(rates, 0.0)
    consumption = np.maximum(-rates, 0.0)
    scale = np.maximum(production.sum(axis=1), consumption.sum(axis=1))
    first_p = coefficient_matrix(production @ delta.T, scale)
    first_c = coefficient_matrix(consumption @ delta.T, scale)
    # the diagonals are 0, so the products skip M = A and M = B as the definition asks
    total = first_p + first_c + first_p @ first_p + first_c @ first_c
    np.fill_diagonal(total, 0.0)
    return np.clip(total, 0.0, 1.0)


def pfa_importance(gas: ct.Solution, states: np.ndarray, targets: list[str],
                   weights: np.ndarray | None = None) -> np.ndarray:
    """PFA importance ``[ns]``: max over ``states`` ``[m, 2 + ns]`` of the best bottleneck path from
    a target (weighted by ``weights`` ``[m, n_targets]``)."""
    return graph_importance(gas, states, targets, pfa_matrix, "min", weights)


def reduce(inputs: MethodInputs) -> MethodOutcome:
    """PFA reduction: importances from the detailed runs, then the threshold sweep with bisection."""
    return reduce_by_threshold("pfa", pfa_importance, inputs)
