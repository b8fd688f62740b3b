"""One reduction run end to end: detailed targets (cached) → method → written YAML → independent
verification → report, PNG and JSON summary. Methods are looked up in :data:`METHODS`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.errors import DeepkinError, InputError
from mechanisms.executor import make_executor
from mechanisms.reduce_config import ReductionConfig
from mechanisms.reduce_report import plot_ignition, write_report, write_summary_json
from mechanisms.reduced_writer import builder_for
from mechanisms.reduction import CandidateScore, Evaluator, verify_written
from mechanisms.targets import ReferenceTargets, reference_targets

MAX_VERIFY_TRIES = 5


@dataclass
class MethodOutcome:
    """Candidates best first (each passed in memory) and what the method wants reported."""

    candidates: list[CandidateScore]
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodInputs:
    config: ReductionConfig
    reference: ReferenceTargets
    evaluator: Evaluator
    forced: np.ndarray
    out_dir: Path
    progress: bool
    log: Callable[[str], None]


def _graph(kind: str) -> Callable[[MethodInputs], MethodOutcome]:
    def run(inp: MethodInputs) -> MethodOutcome:
        from mechanisms.drg import drg_importance
        from mechanisms.drgep import drgep_importance
        from mechanisms.threshold_search import threshold_sweep

        gas = inp.config.mechanism.solution()
        states = inp.reference.samples.reshape(-1, inp.reference.samples.shape[-1])
        importance_fn = drg_importance if kind == "drg" else drgep_importance
        importance = importance_fn(gas, states, inp.config.targets)
        result = threshold_sweep(importance, inp.forced, inp.evaluator, progress=inp.progress)
        for st in result.steps:
            inp.log(f"{kind} {st.phase}: level {st.level}, threshold ({st.threshold_low:.3g}, "
                    f"{st.threshold_high:.3g}] → {st.n_species} species, max error "
                    f"{100 * st.max_error:.2f} % {'pass' if st.passed else 'FAIL'}")
        names = gas.species_names
        return MethodOutcome([result.best], threshold=result.threshold, details={
            "steps": [asdict(s) for s in result.steps],
            "importance": {n: float(v) for n, v in zip(names, importance)}})
    return run


def _deepmr(inp: MethodInputs) -> MethodOutcome:
    from mechanisms.deepmr import run_deepmr

    settings = inp.config.deepmr
    start = None
    details: dict[str, Any] = {}
    if settings.start == "drgep":
        if not inp.config.targets:
            raise InputError("deepmr.start: 'drgep' needs target species (targets: [...])")
        seed = _graph("drgep")(inp)
        start = seed.candidates[0].mask
        details["start_species"] = int(start.sum())
        inp.log(f"deepmr starts around the DRGEP model of {int(start.sum())} species")
    result = run_deepmr(inp.evaluator, inp.forced, settings, inp.out_dir / "deepmr-checkpoint",
                        start=start, progress=inp.progress, log=inp.log)
    details.update({"history": result.history, "stop_reason": result.stop_reason,
                    "resumed_from_iteration": result.resumed_from, "settings": settings.to_dict(),
                    "archive_size": result.n_simulated})
    if not result.ranked:
        raise DeepkinError("deepmr: no candidate met the error bound (not even the detailed model); "
                           "check the conditions")
    return MethodOutcome(result.ranked, details=details)


METHODS: dict[str, Callable[[MethodInputs], MethodOutcome]] = {
    "drg": _graph("drg"), "drgep": _graph("drgep"), "deepmr": _deepmr,
}


def run_reduction(config: ReductionConfig, out_dir: str | Path, workers: int | None = None,
                  scheduler: str | None = None, progress: bool = True, cache_dir: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reduce ``config.mechanism`` with ``config.method``; write ``<method>.yaml``,
    ``<method>-report.md``, ``<method>-ignition.png`` and ``<method>-summary.json`` in ``out_dir``.

    Returns the summary (plain data). Raises :class:`InputError` for a missing method or a
    condition where the detailed mechanism does not ignite.
    """
    log = log or (lambda _msg: None)
    if config.method is None:
        raise InputError("method: none given; set 'method:' in the input file or pass --method")
    method = config.method
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    mech = config.mechanism
    names = mech.species_names
    forced = np.array([n in set(config.forced_species()) for n in names])
    with make_executor(workers, scheduler) as executor:
        reference = reference_targets(config, executor, cache_dir, progress=progress)
        log(f"detailed targets for {len(config.conditions)} conditions "
            f"{'from the cache' if reference.cached else f'computed in {reference.seconds:.1f} s'}")
        evaluator = Evaluator(config, reference, executor)
        outcome = METHODS[method](MethodInputs(config, reference, evaluator, forced, out, progress, log))
        path = out / f"{method}.yaml"
        verified = chosen = None
        for cand in outcome.candidates[:MAX_VERIFY_TRIES]:
            _write(cand, path, config, method, outcome.threshold)
            check = verify_written(str(path), config, reference, executor, progress=progress)
            chosen, verified = cand, check
            log(f"verified {path}: {check.n_species} species, max error {100 * check.max_error:.2f} %"
                f"{'' if check.passed else ' (over the bound; trying the next candidate)'}")
            if check.passed:
                break
        assert chosen is not None and verified is not None
        description = getattr(executor, "description", "")
    wall = time.perf_counter() - started
    summary = _summary(config, reference, method, outcome, chosen, verified, path, wall,
                       evaluator.n_simulated, description)
    png = plot_ignition(out / f"{method}-ignition.png", summary["conditions"],
                        f"{mech.source}: {summary['detailed']['n_species']} → "
                        f"{verified.n_species} species ({method.upper()}, bound {config.error_percent:g} %)")
    summary["report"] = {"markdown": str(out / f"{method}-report.md"),
                         "png": str(png) if png else None,
                         "json": str(out / f"{method}-summary.json")}
    write_report(out / f"{method}-report.md", summary, png.name if png else None)
    write_summary_json(out / f"{method}-summary.json", summary)
    return summary


def _write(cand: CandidateScore, path: Path, config: ReductionConfig, method: str,
           threshold: float | None) -> None:
    mech = config.mechanism
    builder = builder_for(mech.yaml_text, mech.phase, mech.sha256)
    provenance = {
        "method": method, "error-bound-percent": config.error_percent,
        "source": mech.source, "source-sha256": mech.sha256, "source-phase": mech.phase,
        "targets": config.targets, "retained-species": config.retained,
        "max-error-percent": round(100 * cand.max_error, 4), "threshold": threshold,
        "equilibrium-error-k": config.equilibrium_error_k,
        "conditions": [c.label for c in config.conditions],
        "simulation": config.simulation.to_dict(), "cantera-version": ct.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    provenance = {k: v for k, v in provenance.items() if v is not None}
    description = (f"Skeletal mechanism reduced from {mech.source} (sha256 {mech.sha256}) by deepkin "
                   f"{method.upper()}: {cand.n_species} species, max ignition-delay error "
                   f"{100 * cand.max_error:.2f} % (bound {config.error_percent:g} %) over "
                   f"{len(config.conditions)} conditions; details under deepkin-reduction.")
    builder.write_yaml(cand.mask, path, description, provenance, name=f"{mech.phase}-{method}")


def _summary(config: ReductionConfig, reference: ReferenceTargets, method: str, outcome: MethodOutcome,
             chosen: CandidateScore, verified: CandidateScore, path: Path, wall: float,
             n_simulated: int, executor: str) -> dict[str, Any]:
    mech = config.mechanism
    gas = mech.solution()
    rows = []
    for i, cond in enumerate(config.conditions):
        red_teq = None if verified.t_eq_k is None or not np.isfinite(verified.t_eq_k[i]) \
            else float(verified.t_eq_k[i])
        value = verified.values[i]
        rows.append({
            "label": cond.label, "kind": cond.kind, "temperature_k": cond.temperature_k,
            "pressure_atm": cond.pressure_pa / ct.one_atm, "phi": cond.phi,
            "mixture": f"phi={cond.phi:g}" if cond.phi is not None else "reactants",
            "detailed": float(reference.values[i]),
            "reduced": float(value) if np.isfinite(value) else None,
            "status": verified.statuses[i], "error": float(verified.errors[i]),
            "error_in_memory": float(chosen.errors[i]),
            "t_eq_detailed_k": float(reference.t_eq_k[i]), "t_eq_reduced_k": red_teq,
            "delta_t_eq_k": None if red_teq is None else red_teq - float(reference.t_eq_k[i]),
        })
    return {
        "method": method, "source": mech.source, "source_sha256": mech.sha256, "phase": mech.phase,
        "error_bound_percent": config.error_percent, "equilibrium_error_k": config.equilibrium_error_k,
        "targets": config.targets, "retained_species": config.retained,
        "forced_species": config.forced_species(),
        "detailed": {"n_species": gas.n_species, "n_reactions": gas.n_reactions},
        "reduced": {"path": str(path), "n_species": verified.n_species,
                    "n_reactions": verified.n_reactions, "species": chosen.species(mech.species_names)},
        "threshold": outcome.threshold,
        "verification": {"passed": verified.passed, "max_error_percent": 100 * verified.max_error,
                         "mean_error_percent": 100 * verified.mean_error,
                         "max_eq_error_k": (verified.eq_error_k if verified.eq_error_k is not None
                                            else float("nan")),
                         "in_memory_max_error_percent": 100 * chosen.max_error},
        "conditions": rows,
        "simulation": config.simulation.to_dict(),
        "reference": {"key": reference.key, "cached": reference.cached, "seconds": reference.seconds},
        "simulated_candidates": n_simulated, "wall_s": wall, "executor": executor,
        "cantera_version": ct.__version__,
        "method_details": outcome.details,
    }
