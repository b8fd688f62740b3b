"""Sensitivity analysis after a graph method (DRGEP+SA, Niemeyer, Sung & Raju 2010; as pyMARS).

The graph method's answer keeps some species only just: those whose importance is below
``upper-threshold`` (ε*) are *in limbo*. Each is removed on its own and the candidate scored;
``greedy`` removes the one whose removal costs least (lowest objective among those still within
every bound), then scores the remaining ones again from the new model, until no removal stays within
the bounds; ``initial`` ranks them once by their single-removal score and removes them in that
order until a removal breaks a bound. Every candidate goes through the evaluator, so one that
cannot be built or integrated (pyMARS issues #64, #69) scores 100 % and is simply not removed; an
empty limbo (pyMARS #28) returns the graph method's answer and says so.
"""

from __future__ import annotations

import numpy as np

from mechanisms.reduction.evaluate import CandidateScore
from mechanisms.reduction.method import MethodInputs, MethodOutcome


def _rank(score: CandidateScore) -> tuple[bool, float]:
    """Sort key: candidates within the bounds first, by objective; the others by violation."""
    return (not score.passed, score.objective if score.passed else score.violation)


def refine(inputs: MethodInputs, outcome: MethodOutcome) -> MethodOutcome:
    """Sensitivity analysis on ``outcome`` (a graph method's, whose details hold the species'
    importances); returns the smaller answer, with the graph answer as the next candidate."""
    settings = inputs.config.sensitivity
    assert settings is not None
    names = inputs.config.mechanism.species_names
    importance = np.array([outcome.details["importance"][n] for n in names])
    start = outcome.candidates[0]
    current = start
    limbo = [i for i in np.nonzero(start.mask & ~inputs.forced)[0]
             if importance[i] < settings.upper_threshold]
    inputs.log(f"sensitivity analysis ({settings.kind}): {len(limbo)} species in limbo "
               f"(importance < {settings.upper_threshold:g})")
    steps: list[dict] = []

    def without(i: int) -> np.ndarray:
        mask = current.mask.copy()
        mask[i] = False
        return mask

    def record(i: int, score: CandidateScore) -> None:
        steps.append({"species": names[i], "n_species": score.n_species, "max_error": score.max_error,
                      "violation": score.violation, "passed": score.passed})
        inputs.log(f"sensitivity analysis: without {names[i]} → {score.n_species} species, "
                   f"{score.violation:.2f} of the bound {'pass' if score.passed else 'FAIL'}")

    if settings.kind == "initial" and limbo:
        trials = inputs.evaluator.evaluate([without(i) for i in limbo], progress=inputs.progress,
                                           desc="sensitivity")
        limbo = [i for _, i in sorted(zip(trials, limbo), key=lambda pair: _rank(pair[0]))]
        for i in limbo:
            score = inputs.evaluator.evaluate([without(i)], progress=inputs.progress, desc="sensitivity")[0]
            record(i, score)
            if not score.passed:
                break
            current = score
    while settings.kind == "greedy" and limbo:
        trials = inputs.evaluator.evaluate([without(i) for i in limbo], progress=inputs.progress,
                                           desc="sensitivity")
        best = min(range(len(limbo)), key=lambda k: _rank(trials[k]))
        record(limbo[best], trials[best])
        if not trials[best].passed:
            break
        current = trials[best]
        limbo.pop(best)
    details = {**outcome.details, "sensitivity": {**settings.to_dict(), "steps": steps,
                                                  "graph_species": start.n_species}}
    return MethodOutcome([current, start] if current is not start else [start],
                         threshold=outcome.threshold, details=details)
