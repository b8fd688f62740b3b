"""Directed Relation Graph (DRG, Lu & Law 2005): species importance from sampled states.

``r_AB = Σ_i |ν_A,i ω_i δ_B,i| / Σ_i |ν_A,i ω_i|`` (how much of A's production and consumption
involves B). A species is kept at threshold ε when some path from a target reaches it through
edges ``r ≥ ε``; its importance is therefore the largest bottleneck (max over paths of the min edge)
from any target, maximised over all sampled states, and the threshold sweep keeps the species with
importance ≥ ε (the same model as pyMARS's graph search at ε). A condition's ``target-weights``
(pyMARS) scale its targets: a path from a target of weight w is worth at most w.
"""

from __future__ import annotations

from collections.abc import Callable

import cantera as ct
import numpy as np

from mechanisms.reduction.method import MethodInputs, MethodOutcome
from mechanisms.reduction.threshold_search import reduce_by_threshold
from mechanisms.state import set_gas_state


def reaction_terms(gas: ct.Solution, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ν ω, δ)`` at one state ``[T (K), P (Pa), Y...]``.

    ``ν ω`` is ``[ns, nr]`` (kmol/m³/s): net stoichiometric coefficient times net rate of progress;
    ``δ`` is ``[ns, nr]`` float: 1 where the species takes part in the reaction (reactant or product).
    """
    set_gas_state(gas, state)
    nu = gas.product_stoich_coeffs - gas.reactant_stoich_coeffs
    delta = ((gas.product_stoich_coeffs != 0) | (gas.reactant_stoich_coeffs != 0)).astype(float)
    return nu * gas.net_rates_of_progress[np.newaxis, :], delta


def drg_matrix(gas: ct.Solution, state: np.ndarray) -> np.ndarray:
    """DRG interaction coefficients ``r[A, B]`` ``[ns, ns]`` in [0, 1] at one state; diagonal 0."""
    rates, delta = reaction_terms(gas, state)
    mag = np.abs(rates)
    return coefficient_matrix(mag @ delta.T, mag.sum(axis=1))


def coefficient_matrix(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``r[A, B] = numerator[A, B] / denominator[A]`` ``[ns, ns]``, 0 where the denominator
    ``[ns]`` is 0 and on the diagonal, clipped to [0, 1]."""
    denominator = denominator[:, np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denominator > 0, numerator / denominator, 0.0)
    np.fill_diagonal(r, 0.0)
    return np.clip(r, 0.0, 1.0)


def path_importance(matrix: np.ndarray, sources: list[int], combine: str,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Best path value from any of ``sources`` to every species through edges ``matrix[A, B]``.

    ``combine="min"``: a path is worth its weakest edge (DRG, PFA); ``"product"``: the product of
    its edges (DRGEP). A source is worth its weight (``weights`` ``[n_sources]``, default 1).
    Dijkstra on a dense ``[ns, ns]`` matrix with weights in [0, 1]; returns ``[ns]``.
    """
    n = matrix.shape[0]
    overall = np.zeros(n)
    for src, weight in zip(sources, np.ones(len(sources)) if weights is None else weights):
        if weight <= 0:
            continue
        best = np.zeros(n)
        best[src] = float(weight)
        done = np.zeros(n, dtype=bool)
        for _ in range(n):
            open_best = np.where(done, -1.0, best)
            u = int(np.argmax(open_best))
            if open_best[u] <= 0.0:
                break
            done[u] = True
            row = matrix[u]
            via = np.minimum(best[u], row) if combine == "min" else best[u] * row
            best = np.where(done, best, np.maximum(best, via))
        overall = np.maximum(overall, best)
    return overall


def graph_importance(gas: ct.Solution, states: np.ndarray, targets: list[str],
                     matrix: Callable[[ct.Solution, np.ndarray], np.ndarray], combine: str,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Importance ``[ns]`` of every species: max over ``states`` ``[m, 2 + ns]`` of the best path
    value (:func:`path_importance` with ``combine``) from a target through ``matrix(gas, state)``;
    ``weights`` ``[m, n_targets]`` weigh the targets state by state (default 1)."""
    sources = [gas.species_index(t) for t in targets]
    out = np.zeros(gas.n_species)
    for k, state in enumerate(states):
        row = None if weights is None else weights[k]
        out = np.maximum(out, path_importance(matrix(gas, state), sources, combine, row))
    return out


def drg_importance(gas: ct.Solution, states: np.ndarray, targets: list[str],
                   weights: np.ndarray | None = None) -> np.ndarray:
    """DRG importance ``[ns]`` of every species: max over ``states`` ``[m, 2 + ns]`` of the best
    bottleneck path from a target (weighted by ``weights`` ``[m, n_targets]``)."""
    return graph_importance(gas, states, targets, drg_matrix, "min", weights)


def reduce(inputs: MethodInputs) -> MethodOutcome:
    """DRG reduction: importances from the detailed runs, then the threshold sweep with bisection."""
    return reduce_by_threshold("drg", drg_importance, inputs)
