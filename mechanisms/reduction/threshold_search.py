"""Threshold sweep with bisection for graph methods (DRG, DRGEP).

Species importances ``[ns]`` define a nested family of models: at threshold ε every species with
importance < ε (and not forced) is removed. Only distinct importance values change the model, so the
family is indexed by ``level`` k = number of distinct free importance values removed. The sweep steps
a coarse log grid of thresholds upward until the first model that fails a bound, then bisects the
levels between the last passing and the first failing model until they are neighbours: every model
in between gets its chance, unlike a fixed linear step. :func:`reduce_by_threshold` is the whole of
a graph method once its importances are given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from mechanisms.reduction.evaluate import CandidateScore, Evaluator
from mechanisms.reduction.method import MethodInputs, MethodOutcome

DEFAULT_GRID = tuple(float(x) for x in np.logspace(-4, 0, 17))  # 4 per decade, 1e-4 … 1


@dataclass
class SweepStep:
    """One evaluated model: its level, the threshold interval ``(low, high]`` that gives it, and
    its score (``errors``: max relative error per target; ``violation``: see ``constraints.py``)."""

    level: int
    threshold_low: float
    threshold_high: float
    n_species: int
    max_error: float
    violation: float
    errors: dict[str, float]
    passed: bool
    phase: str  # "sweep" or "bisect"


@dataclass
class SweepResult:
    best: CandidateScore
    level: int
    threshold: float  # a threshold that gives the answer (the upper end of its interval)
    steps: list[SweepStep] = field(default_factory=list)


def nested_levels(importance: np.ndarray, forced: np.ndarray) -> np.ndarray:
    """Sorted distinct importance values of the free (not forced) species ``[m]``."""
    return np.unique(np.asarray(importance)[~np.asarray(forced, dtype=bool)])


def mask_at_level(importance: np.ndarray, forced: np.ndarray, values: np.ndarray, level: int) -> np.ndarray:
    """Kept species ``[ns]`` with the ``level`` smallest distinct free importances removed."""
    if level == 0:
        return np.ones(len(importance), dtype=bool)
    return np.asarray(forced, dtype=bool) | (np.asarray(importance) > values[level - 1])


def threshold_sweep(importance: np.ndarray, forced: np.ndarray, evaluator: Evaluator,
                    grid: tuple[float, ...] = DEFAULT_GRID, progress: bool = False) -> SweepResult:
    """The largest passing level reached by sweeping ``grid`` upward, then bisecting.

    ``importance`` and ``forced`` are ``[ns]``; ``evaluator`` scores masks. Level 0 (the detailed
    model) always passes.
    """
    values = nested_levels(importance, forced)
    n_levels = len(values)
    steps: list[SweepStep] = []
    scored: dict[int, CandidateScore] = {}

    def score(level: int, phase: str) -> CandidateScore:
        if level not in scored:
            mask = mask_at_level(importance, forced, values, level)
            result = evaluator.evaluate([mask], progress=progress, desc=f"{phase} level {level}")[0]
            if level == 0:
                result.passed = True  # the detailed model itself, up to integration noise
            scored[level] = result
            low = values[level - 1] if level > 0 else 0.0
            high = values[level] if level < n_levels else np.inf
            steps.append(SweepStep(level, float(low), float(high), result.n_species, result.max_error,
                                   result.violation, dict(result.target_errors), result.passed, phase))
        return scored[level]

    # level reached by threshold t: the number of distinct values strictly below t
    grid_levels = sorted({int(np.searchsorted(values, t, side="left")) for t in grid} | {n_levels})
    last_pass, first_fail = 0, None
    score(0, "sweep")
    for level in grid_levels:
        if level <= last_pass:
            continue
        if score(level, "sweep").passed:
            last_pass = level
        else:
            first_fail = level
            break
    if first_fail is not None:
        while first_fail - last_pass > 1:
            mid = (last_pass + first_fail) // 2
            if score(mid, "bisect").passed:
                last_pass = mid
            else:
                first_fail = mid
    threshold = float(values[last_pass]) if last_pass < n_levels else float(values[-1]) * 1.000001
    return SweepResult(best=scored[last_pass], level=last_pass, threshold=threshold, steps=steps)


def condition_weights(inputs: MethodInputs) -> np.ndarray:
    """The targets' weights ``[n_conditions * SAMPLE_POINTS, n_targets]`` of every sampled state
    (a condition's ``target-weights``, else 1), in the order of the reference's samples."""
    config = inputs.config
    per_state = inputs.reference.samples.shape[1]
    rows = [c.target_weights or (1.0,) * len(config.targets) for c in config.conditions]
    return np.repeat(np.array(rows, dtype=float), per_state, axis=0)


def reduce_by_threshold(name: str, importance_of: Callable[..., np.ndarray],
                        inputs: MethodInputs) -> MethodOutcome:
    """A graph method: importances ``importance_of(gas, states, targets, weights)`` ``[ns]`` from
    the detailed runs' sampled states, then :func:`threshold_sweep`; ``name`` labels the log lines."""
    gas = inputs.config.mechanism.solution()
    samples = inputs.reference.samples
    states = samples.reshape(-1, samples.shape[-1])
    importance = importance_of(gas, states, inputs.config.targets, condition_weights(inputs))
    result = threshold_sweep(importance, inputs.forced, inputs.evaluator, progress=inputs.progress)
    for st in result.steps:
        inputs.log(f"{name} {st.phase}: level {st.level}, threshold ({st.threshold_low:.3g}, "
                   f"{st.threshold_high:.3g}] → {st.n_species} species, max error "
                   f"{100 * st.max_error:.2f} %, {st.violation:.2f} of the bound "
                   f"{'pass' if st.passed else 'FAIL'}")
    return MethodOutcome([result.best], threshold=result.threshold, details={
        "steps": [asdict(s) for s in result.steps],
        "importance": {n: float(v) for n, v in zip(gas.species_names, importance)}})
