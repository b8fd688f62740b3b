"""How a candidate is judged against its bounds, and which bound stopped a reduction.

Every target has a bound (a relative error: 0.05 = 5 %) and a weight. A candidate's error on a
target is its largest relative error over that target's conditions (pyMARS's metric); its
*violation* is the largest error / bound over the targets (≤ 1: it passes); its *objective* is the
weighted mean of error / bound, which ranks candidates that all pass (the sensitivity analysis's
choice, DeePMR's parents and its network's loss weights). The bounds decide; the weights only order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechanisms.reduction.config import EQUILIBRIUM


@dataclass
class Judgement:
    """``errors``: max relative error per target (NaN when its conditions were skipped);
    ``violation``: max of error / bound over the evaluated targets; ``objective``: weighted mean of
    error / bound over them; ``passed``: every target evaluated and within its bound."""

    errors: dict[str, float]
    violation: float
    objective: float
    passed: bool


def judge(errors: np.ndarray, eq_errors: np.ndarray, targets: list[str], bounds: dict[str, float],
          weights: dict[str, float]) -> Judgement:
    """Judge per-condition relative errors ``errors`` ``[nc]`` (NaN: skipped) of conditions whose
    targets are ``targets`` ``[nc]``, and relative equilibrium-temperature errors ``eq_errors``
    ``[nc]``, against ``bounds`` (fractions) with ``weights``."""
    per_target: dict[str, float] = {}
    for target in bounds:
        values = eq_errors if target == EQUILIBRIUM else errors[[t == target for t in targets]]
        values = np.asarray(values, dtype=float)
        per_target[target] = float("nan") if np.isnan(values).any() else float(values.max(initial=0.0))
    ratios = {t: e / bounds[t] for t, e in per_target.items() if np.isfinite(e)}
    violation = max(ratios.values(), default=0.0)
    total = sum(weights[t] for t in ratios)
    objective = sum(weights[t] * r for t, r in ratios.items()) / total if total > 0 else 0.0
    passed = len(ratios) == len(per_target) and violation <= 1.0
    return Judgement(per_target, float(violation), float(objective), bool(passed))


def binding(answer_mask: np.ndarray, answer_errors: dict[str, float], bounds: dict[str, float],
            scored: list[tuple[np.ndarray, dict[str, float]]]) -> dict:
    """Which bound stopped the reduction at ``answer_mask`` ``[ns]``.

    ``scored`` holds ``(mask, errors per target)`` of every candidate simulated. The smaller
    candidates that are reductions of the answer (one species fewer where any were tried, else any
    subset) failed: each counts once for every bound it broke. ``bound_by`` is the bound broken
    most often (ties: the answer's tightest); ``utilisation`` is the answer's error / bound.
    """
    answer_mask = np.asarray(answer_mask, dtype=bool)
    n = int(answer_mask.sum())
    subsets = [(int(m.sum()), e) for m, e in scored
               if int(m.sum()) < n and not (np.asarray(m, dtype=bool) & ~answer_mask).any()]
    nearest = [e for size, e in subsets if size == n - 1] or [e for _, e in subsets]
    broken = {t: sum(1 for e in nearest if np.isfinite(e.get(t, np.nan)) and e[t] > bounds[t])
              for t in bounds}
    utilisation = {t: answer_errors[t] / bounds[t] for t in bounds}
    tightest = max(utilisation, key=lambda t: utilisation[t])
    bound_by = max(bounds, key=lambda t: (broken[t], t == tightest)) if any(broken.values()) else tightest
    return {"bound_by": bound_by, "tightest": tightest, "utilisation": utilisation,
            "smaller_tried": len(nearest), "smaller_failed_on": broken}
