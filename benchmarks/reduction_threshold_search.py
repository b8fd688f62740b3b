"""DRGEP threshold search: pyMARS's linear 0.01 steps against deepkin's sweep + bisection.

Both searches use the same importance coefficients and the same evaluator (same conditions, bound
and integrator settings), so the difference is the search alone. Prints species count, max error
and number of candidate models simulated by each, and the wall time of each on this machine.

    python benchmarks/reduction_threshold_search.py [-i docs/examples/reduce-gri30-methane.yaml] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

from mechanisms.executor import make_executor
from mechanisms.reduction import (
    Evaluator,
    drgep_importance,
    load_reduce_config,
    reference_targets,
    threshold_sweep,
)


def pymars_linear(importance, forced, evaluator):
    """pyMARS 1.2's loop: threshold 0.01, 0.02, … until a bound is exceeded."""
    threshold, last = 0.01, None
    while True:
        mask = forced | (importance >= threshold)
        score = evaluator.evaluate([mask])[0]
        if not score.passed:
            return last, threshold
        last = score
        threshold = round(threshold + 0.01, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input", default="docs/examples/reduce-gri30-methane.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = load_reduce_config(args.input, method="drgep")
    forced = config.forced_mask()
    with make_executor(args.workers) as executor:
        reference = reference_targets(config, executor)
        states = reference.samples.reshape(-1, reference.samples.shape[-1])
        importance = drgep_importance(config.mechanism.solution(), states, config.targets)

        linear = Evaluator(config, reference, executor)
        started = time.perf_counter()
        best, stopped_at = pymars_linear(importance, forced, linear)
        t_linear = time.perf_counter() - started

        ours = Evaluator(config, reference, executor)
        started = time.perf_counter()
        result = threshold_sweep(importance, forced, ours)
        t_ours = time.perf_counter() - started

    bounds = ", ".join(f"{t} {b:g} %" for t, b in config.bounds_percent.items())
    print(f"{len(config.conditions)} conditions, bounds {bounds}, {executor.description}")
    print(f"pyMARS linear 0.01 steps: {best.n_species} species, max error {100 * best.max_error:.2f} %, "
          f"stopped at threshold {stopped_at:.2f}; {linear.n_simulated} models simulated, {t_linear:.1f} s")
    print(f"sweep + bisection:        {result.best.n_species} species, max error "
          f"{100 * result.best.max_error:.2f} %, threshold {result.threshold:.4g}; {ours.n_simulated} "
          f"models simulated, {t_ours:.1f} s")


if __name__ == "__main__":
    main()
