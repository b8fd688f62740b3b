"""DRG with error propagation (DRGEP, Pepiot-Desjardins & Pitsch 2008), as pyMARS computes it.

``r_AB = |Σ_i ν_A,i ω_i δ_B,i| / max(P_A, C_A)`` with ``P_A``/``C_A`` A's total production and
consumption rates; a species' importance is the largest product of coefficients along a path from
a target, maximised over targets and sampled states.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.reduction.drg import coefficient_matrix, graph_importance, reaction_terms
from mechanisms.reduction.method import MethodInputs, MethodOutcome
from mechanisms.reduction.threshold_search import reduce_by_threshold


def drgep_matrix(gas: ct.Solution, state: np.ndarray) -> np.ndarray:
    """DRGEP direct interaction coefficients ``r[A, B]`` ``[ns, ns]`` in [0, 1]; diagonal 0."""
    rates, delta = reaction_terms(gas, state)
    numerator = np.abs(rates @ delta.T)
    production = np.maximum(rates, 0.0).sum(axis=1)
    consumption = np.maximum(-rates, 0.0).sum(axis=1)
    return coefficient_matrix(numerator, np.maximum(production, consumption))


def drgep_importance(gas: ct.Solution, states: np.ndarray, targets: list[str],
                     weights: np.ndarray | None = None) -> np.ndarray:
    """DRGEP overall interaction coefficients ``[ns]``: max over ``states`` ``[m, 2 + ns]`` and
    targets of the best path product (times the target's weight, ``weights`` ``[m, n_targets]``)."""
    return graph_importance(gas, states, targets, drgep_matrix, "product", weights)


def reduce(inputs: MethodInputs) -> MethodOutcome:
    """DRGEP reduction: importances from the detailed runs, then the threshold sweep with bisection."""
    return reduce_by_threshold("drgep", drgep_importance, inputs)
