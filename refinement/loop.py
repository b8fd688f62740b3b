"""The refinement loop: harvest the states the surrogate's own runs visit, label them, learn
them, repeat; resumable stage by stage (``refinement/workdir.py``).

Round 0 evaluates the starting model. Round K ≥ 1 harvests the states of round K − 1's harvest
cases into ``round-K/data.h5`` (round K − 1's dataset plus the new rows), fine-tunes the networks
from round K − 1's model on it, and evaluates the new model. The loop stops when the validation
cases meet the targets or after ``rounds`` rounds. The best round is chosen without the
validation cases: by the worst error (over its target) of the harvest cases against their ODE
references; its model is copied to ``DIR/best.safetensors``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechanisms.errors import InputError
from refinement import stages
from refinement.cases import normalised_errors
from refinement.config import RefineConfig, Targets, default_work_dir
from refinement.workdir import StageRecord, WorkDir, file_digest

BEST_MODEL = "best.safetensors"
CRITERION = ("the worst error, over its target, of the harvest cases against their ODE "
             "references (flame speed and peak T of the harvest flames, end T, ignition delay and "
             "the tracked species after ignition of the harvest 0D rollouts, their mean "
             "ignition-delay error); the validation cases are not used")


@dataclass
class RoundOutcome:
    """One evaluated round: its model, the records of its stages and its two verdicts."""

    round: int
    model: Path
    model_stamp: str  # what the next round's stages record they were computed from
    records: dict[str, StageRecord]
    score: float  # harvest cases: the worst |error| / target (lower is better)
    worst: str  # the figure that sets the score
    targets_met: bool | None  # validation cases (None: there are none)


@dataclass
class RefineSummary:
    """What a finished (or stopped) run leaves: the work folder, the rounds, the best."""

    work_dir: Path
    outcomes: list[RoundOutcome]
    best_round: int
    best_model: Path
    stopped: str  # why the loop ended

    @property
    def last(self) -> RoundOutcome:
        return self.outcomes[-1]


def run_refinement(model: str | Path, config: RefineConfig, work_dir: str | Path | None = None,
                   progress: bool = True, echo: Callable[[str], None] | None = None
                   ) -> RefineSummary:
    """Run (or resume) the loop for ``model`` (a path or shipped name) in ``work_dir`` (default
    ``~/.cache/deepkin/refine/<name>``), holding the folder's lock (``WorkDir.hold``) for the
    whole run; InputError before any work for a config, model or work folder that cannot be
    used, or a folder another run holds."""
    from kinetics.model.model_file import read_model_file
    from kinetics.model.registry import resolve_model

    model_path = resolve_model(model)
    meta = read_model_file(model_path)[0]
    fuel, oxidizer = meta.training.get("fuel"), meta.training.get("oxidizer")
    if not fuel or not oxidizer:
        raise InputError(f"model: {model_path} does not record its fuel and oxidiser")
    _check_recipes(config, meta)
    _check_after_ignition_species(config, meta.species)
    if config.harvest.flames or config.validation.flames:
        _check_openfoam(config.in_process)
    work = WorkDir(work_dir or default_work_dir(config.name), echo, config.reference_folder)
    # the lock before the commit: a second run is refused before it reads or writes anything of
    # the folder, and two runs started at once on a fresh folder cannot both commit a recipe
    with work.hold({"rounds": config.rounds, "targets": dataclasses.asdict(config.targets)}):
        return _run(model_path, config, work, meta, fuel, oxidizer, progress)


def _run(model_path: Path, config: RefineConfig, work: WorkDir, meta: Any, fuel: str,
         oxidizer: str, progress: bool) -> RefineSummary:
    """The loop in ``work``, whose lock this process holds."""
    model_sha = file_digest(model_path)
    work.commit({**config.recipe(), "model_sha256": model_sha})
    if not work.model(0).is_file() or file_digest(work.model(0)) != model_sha:
        work.copy(model_path, work.model(0))
    if config.train.threads:
        import torch

        torch.set_num_threads(config.train.threads)
    ctx = stages.Context(config, work, meta.mechanism_sha256, meta.dt_s, fuel, oxidizer, progress)
    work.log(f"refine {model_path.name} ({config.name}): up to {config.rounds} round(s) in "
             f"{work.root}")

    evaluated = work.run_stage("r0/evaluate", {"model": f"model-{model_sha}"},
                               lambda fresh: stages.evaluate(ctx, 0, work.model(0), fresh))
    outcomes = [_outcome(config, 0, work.model(0), f"model-{model_sha}",
                         {"evaluate": evaluated})]
    while True:
        k = outcomes[-1].round
        if outcomes[-1].targets_met:
            stopped = f"round {k} meets the targets"
            break
        if k == config.rounds:
            stopped = (f"{k} round(s) run, none judged (no validation cases)"
                       if outcomes[-1].targets_met is None
                       else f"the targets are not met after {k} round(s)")
            break
        if k == 0:  # the replay dataset: needed from round 1 on, built once
            base_id, base_path = "replay", work.replay
            base_record = work.run_stage("replay", {}, lambda fresh: stages.replay(ctx, fresh))
        else:
            base_id, base_path = f"r{k}/harvest", work.round_dir(k) / "data.h5"
            base_record = outcomes[-1].records["harvest"]
        outcomes.append(_round(ctx, k + 1, base_id, base_record, base_path, outcomes[-1]))

    best = min(outcomes, key=lambda o: (o.score, o.round))
    best_model = work.root / BEST_MODEL
    if not best_model.is_file() or file_digest(best_model) != file_digest(best.model):
        work.copy(best.model, best_model)
    work.log(f"best: round {best.round} (harvest score {best.score:.3g}, set by {best.worst}); "
             f"{stopped}")
    summary = RefineSummary(work.root, outcomes, best.round, best_model, stopped)
    from refinement.report import write_report

    write_report(summary, config, CRITERION)
    return summary


def _round(ctx: stages.Context, k: int, base_id: str, base_record: StageRecord, base_path: Path,
           previous: RoundOutcome) -> RoundOutcome:
    """Round ``k``: harvest, the networks, evaluate."""
    work = ctx.work
    states = [work.root / p for p in previous.records["evaluate"].outputs
              if p.endswith(".states.h5")]
    if ctx.config.harvest_reference_states:
        states += stages.reference_states(ctx)
    records: dict[str, StageRecord] = {}
    records["harvest"] = work.run_stage(
        f"r{k}/harvest", {base_id: base_record.stamp,
                          f"r{k - 1}/evaluate": previous.records["evaluate"].stamp},
        lambda fresh: stages.harvest(ctx, k, base_path, states, fresh))
    data = work.round_dir(k) / "data.h5"
    after = {f"r{k}/harvest": records["harvest"].stamp, "model": previous.model_stamp}
    for network in ctx.config.train.paths():
        record = work.run_stage(
            f"r{k}/train-{network}", after,
            lambda fresh, n=network: stages.train_network(ctx, k, n, data, previous.model, fresh))
        records[f"train-{network}"] = record
        after = {**after, f"r{k}/train-{network}": record.stamp}
    records["evaluate"] = work.run_stage(
        f"r{k}/evaluate", {"model": record.stamp},
        lambda fresh: stages.evaluate(ctx, k, work.model(k), fresh))
    return _outcome(ctx.config, k, work.model(k), record.stamp, records)


def _outcome(config: RefineConfig, k: int, model: Path, model_stamp: str,
             records: dict[str, StageRecord]) -> RoundOutcome:
    score, worst, met = judge(records["evaluate"].figures, config.targets)
    return RoundOutcome(k, model, model_stamp, records, score, worst, met)


def judge(figures: dict[str, Any], targets: Targets) -> tuple[float, str, bool | None]:
    """A round's verdicts from its evaluate figures: the harvest score (the worst |error| over
    its target; inf without a harvest figure), the figure that sets it, and whether the
    validation cases meet the targets (None: there are none)."""
    harvest = normalised_errors(figures["harvest"], targets)
    worst = max(harvest, key=harvest.get) if harvest else "no harvest figure"
    score = harvest[worst] if harvest else math.inf
    validation = normalised_errors(figures["validation"], targets)
    met = all(v <= 1.0 for v in validation.values()) if validation else None
    return score, worst, met


def _check_recipes(config: RefineConfig, meta: Any) -> None:
    """InputError when a sampling recipe labels another mechanism or dt than the model's."""
    from mechanisms.loading import load_mechanism
    from sampling.config import SamplingConfig

    named = [(f"replay.recipes[{i}]", p) for i, p in enumerate(config.replay_recipes)]
    for where, path in [*named, ("harvest.recipe", config.harvest_recipe)]:
        sampling = SamplingConfig.from_yaml(path)
        mech = load_mechanism(sampling.mechanism, sampling.phase)
        if mech.sha256 != meta.mechanism_sha256:
            raise InputError(f"{where}: {path.name} samples {sampling.mechanism}, the model was "
                             f"trained on {meta.mechanism_source} (another mechanism)")
        if abs(sampling.dt - meta.dt_s) > 1e-12 * meta.dt_s:
            raise InputError(f"{where}: {path.name} labels steps of dt {sampling.dt:g} s, the "
                             f"model steps {meta.dt_s:g} s")


def _check_after_ignition_species(config: RefineConfig, species: list[str]) -> None:
    """InputError naming the key when a 0D grid tracks a species the model lacks."""
    for name, cases in (("harvest", config.harvest), ("validation", config.validation)):
        tracked = cases.zero_d.after_ignition_species if cases.zero_d else None
        for s in tracked or ():
            if s not in species:
                raise InputError(f"{name}.zero_d.after_ignition_species: {s} is not one of the "
                                 "model's species")


def _check_openfoam(in_process: bool = False) -> None:
    """InputError when OpenFOAM or the deepkin chemistry library is missing (flames need both),
    or, for ``evaluate.chemistry: deepkin-inprocess``, when the library has no in-process
    backend (a library built before it existed: no ``deepkin_local_open`` in it)."""
    from couplers.openfoam.build import has_in_process_backend, library_path, library_problem
    from couplers.openfoam.foam import require_installed

    require_installed()
    problem = library_problem()
    if problem:
        raise InputError(f"OpenFOAM: {problem}; run `deepkin openfoam build` first")
    if in_process and not has_in_process_backend():
        raise InputError(f"evaluate.chemistry: the deepkin chemistry library {library_path()} "
                         "has no in-process backend (built before it existed); run `deepkin "
                         "openfoam build` again, or use evaluate.chemistry: deepkin")
