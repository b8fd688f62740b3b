"""Directed Relation Graph (DRG, Lu & Law 2005): species importance from sampled states.

``r_AB = Σ_i |ν_A,i ω_i δ_B,i| / Σ_i |ν_A,i ω_i|`` (how much of A's production and consumption
involves B). A species is kept at threshold ε when some path from a target reaches it through
edges ``r ≥ ε``; its importance is therefore the largest bottleneck (max over paths of the min edge)
from any target, maximised over all sampled states, and the threshold sweep keeps the species with
importance ≥ ε (the same model as pyMARS's graph search at ε).
"""

from __future__ import annotations

import cantera as ct
import numpy as np

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
    numerator = mag @ delta.T
    denominator = mag.sum(axis=1)[:, np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denominator > 0, numerator / denominator, 0.0)
    np.fill_diagonal(r, 0.0)
    return np.clip(r, 0.0, 1.0)


def path_importance(matrix: np.ndarray, sources: list[int], combine: str) -> np.ndarray:
    """Best path value from any of ``sources`` to every species through edges ``matrix[A, B]``.

    ``combine="min"``: a path is worth its weakest edge (DRG); ``"product"``: the product of its
    edges (DRGEP). Sources are worth 1. Dijkstra on a dense ``[ns, ns]`` matrix with weights in
    [0, 1]; returns ``[ns]``.
    """
    n = matrix.shape[0]
    overall = np.zeros(n)
    for src in sources:
        best = np.zeros(n)
        best[src] = 1.0
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


def drg_importance(gas: ct.Solution, states: np.ndarray, targets: list[str]) -> np.ndarray:
    """DRG importance ``[ns]`` of every species: max over ``states`` ``[m, 2 + ns]`` of the best
    bottleneck path from a target."""
    sources = [gas.species_index(t) for t in targets]
    out = np.zeros(gas.n_species)
    for state in states:
        out = np.maximum(out, path_importance(drg_matrix(gas, state), sources, "min"))
    return out
