"""One reduction run end to end: detailed targets (cached) → method (→ sensitivity analysis) →
written YAML → independent verification → Chemkin files → report, PNGs and JSON summary.

Methods are looked up by name in :data:`METHODS`. A new method is one module with a
``reduce(MethodInputs) -> MethodOutcome`` function (see ``method.py``) and one line there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cantera as ct

from mechanisms.errors import InputError
from mechanisms.executor import make_executor
from mechanisms.reduction import deepmr, drg, drgep, pfa, sensitivity
from mechanisms.reduction.chemkin import write_chemkin
from mechanisms.reduction.config import ReductionConfig
from mechanisms.reduction.constraints import binding
from mechanisms.reduction.evaluate import CandidateScore, Evaluator, verify_written
from mechanisms.reduction.method import Method, MethodInputs, MethodOutcome
from mechanisms.reduction.report import build_summary, write_outputs
from mechanisms.reduction.targets import ReferenceTargets, reference_targets
from mechanisms.reduction.writer import builder_for

METHODS: dict[str, Method] = {
    "drg": Method(drg.reduce, graph=True),
    "drgep": Method(drgep.reduce, graph=True),
    "pfa": Method(pfa.reduce, graph=True),
    "deepmr": Method(deepmr.reduce),
}
MAX_VERIFY_TRIES = 5


def run_reduction(config: ReductionConfig, out_dir: str | Path, workers: int | None = None,
                  scheduler: str | None = None, progress: bool = True, cache_dir: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reduce ``config.mechanism`` with ``config.method`` (and a sensitivity analysis when
    configured); write, with ``NAME`` = :attr:`ReductionConfig.run_name`, ``NAME.yaml``, the Chemkin
    files ``NAME.inp``, ``NAME-thermo.dat`` (and ``NAME-transport.dat``), ``NAME-report.md``,
    ``NAME-ignition.png``, ``NAME-candidates.png`` and ``NAME-summary.json`` in ``out_dir``.

    Returns the summary (plain data). Raises :class:`InputError` for a missing method or a
    condition where the detailed mechanism does not ignite (burn, go out).
    """
    log = log or (lambda _msg: None)
    if config.method is None:
        raise InputError("method: none given; set 'method:' in the input file or pass --method")
    name = config.run_name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with make_executor(workers, scheduler) as executor:
        reference = reference_targets(config, executor, cache_dir, progress=progress)
        log(f"detailed targets for {len(config.conditions)} conditions "
            f"{'from the cache' if reference.cached else f'computed in {reference.seconds:.1f} s'}")
        evaluator = Evaluator(config, reference, executor)
        inputs = MethodInputs(config, reference, evaluator, config.forced_mask(), out, progress, log)
        outcome = METHODS[config.method].reduce(inputs)
        if config.sensitivity is not None:
            outcome = sensitivity.refine(inputs, outcome)
        path = out / f"{name}.yaml"
        chosen, verified = _write_verified(outcome, path, config, reference, executor, progress, log)
        description = getattr(executor, "description", "")
    chemkin = write_chemkin(ct.Solution(str(path)), out / name)
    scored = evaluator.scored()
    bound = binding(chosen.mask, verified.target_errors, evaluator.bounds,
                    [(s.mask, s.target_errors) for s in scored])
    summary = build_summary(config, reference, outcome, chosen, verified, path, chemkin, bound,
                            time.perf_counter() - started, evaluator.n_simulated, description)
    write_outputs(out, summary, scored, evaluator.bounds)
    return summary


def _write_verified(outcome: MethodOutcome, path: Path, config: ReductionConfig,
                    reference: ReferenceTargets, executor, progress: bool,
                    log: Callable[[str], None]) -> tuple[CandidateScore, CandidateScore]:
    """Write the best candidates to ``path`` in turn until one passes the independent re-run.

    Returns ``(candidate, its re-run)``: the first that passed, else the last of
    :data:`MAX_VERIFY_TRIES` tried (its file is the one left at ``path``).
    """
    verified = chosen = None
    for cand in outcome.candidates[:MAX_VERIFY_TRIES]:
        _write(cand, path, config, outcome.threshold)
        check = verify_written(str(path), config, reference, executor, progress=progress)
        chosen, verified = cand, check
        log(f"verified {path}: {check.n_species} species, max error {100 * check.max_error:.2f} %, "
            f"max |dT_eq| {check.eq_error_k:.1f} K"
            f"{'' if check.passed else ' (over a bound; trying the next candidate)'}")
        if check.passed:
            break
    assert chosen is not None and verified is not None
    return chosen, verified


def _write(cand: CandidateScore, path: Path, config: ReductionConfig, threshold: float | None) -> None:
    """Write ``cand`` as a YAML mechanism whose header records how it was made."""
    mech = config.mechanism
    name = config.run_name
    builder = builder_for(mech.yaml_text, mech.phase, mech.sha256)
    errors = {t: round(100 * e, 4) for t, e in cand.target_errors.items()}
    provenance = {
        "method": name, "bounds-percent": config.bounds_percent, "max-errors-percent": errors,
        "weights": config.weights or None,
        "sensitivity-analysis": None if config.sensitivity is None else config.sensitivity.to_dict(),
        "source": mech.source, "source-sha256": mech.sha256, "source-phase": mech.phase,
        "targets": config.targets, "retained-species": config.retained, "threshold": threshold,
        "conditions": [c.label for c in config.conditions],
        "simulation": config.simulation.to_dict(), "cantera-version": ct.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    provenance = {k: v for k, v in provenance.items() if v is not None}
    worst = ", ".join(f"{t} {e:.2f} % (bound {config.bounds_percent[t]:g} %)" for t, e in errors.items())
    description = (f"Skeletal mechanism reduced from {mech.source} (sha256 {mech.sha256}) by deepkin "
                   f"{name.upper()}: {cand.n_species} species over {len(config.conditions)} "
                   f"conditions; max errors: {worst}; details under deepkin-reduction.")
    builder.write_yaml(cand.mask, path, description, provenance, name=f"{mech.phase}-{name}")
