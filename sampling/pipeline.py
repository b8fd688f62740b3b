"""``run_sampling``: plan, execute in parallel, write one dataset file, resume after a kill."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mechanisms.atomic_io import why_not_writable
from mechanisms.dataset_file import SOURCE_NAMES
from mechanisms.errors import InputError, StorageError
from mechanisms.executor import Executor, check_scheduler_address, make_executor
from mechanisms.loading import Mechanism, load_mechanism
from mechanisms.reactor import REACTOR_NAME
from sampling.config import MANIFOLD_SOURCES, SCATTER_SOURCES, SamplingConfig
from sampling.dataset_writer import DatasetWriter
from sampling.journal import Journal
from sampling.multiscale import manifold_ranges, rate_limits
from sampling.plan import (
    check_against_mechanism,
    load_run_states,
    plan_manifold,
    plan_scatter,
    plan_solver_states,
)
from sampling.tasks import TaskContext, TaskResult, TaskSpec, execute_task


@dataclass
class SamplingSummary:
    """What a finished run did."""

    output: str
    run_index: int
    resumed: bool
    rows_per_source: dict[str, int]
    failed_tasks: list[str]
    partial_tasks: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rows_computed: int = 0

    @property
    def n_rows(self) -> int:
        return sum(self.rows_per_source.values())

    def to_dict(self) -> dict:
        return {"rows_per_source": self.rows_per_source, "failed_tasks": self.failed_tasks,
                "partial_tasks": self.partial_tasks, "notes": self.notes,
                "seconds": round(self.seconds, 3), "rows_computed": self.rows_computed}


def _identity(mech: Mechanism, config: SamplingConfig, states_sha256: list[str]) -> dict:
    """What a journal must match to be resumed: the mechanism, dt, the config and the bytes of
    the states files it reads (their sha256)."""
    return {"mechanism_sha256": mech.sha256, "dt": config.dt, "config": config.to_dict(),
            "solver_states_sha256": states_sha256}


def _new_file(output: Path, mech: Mechanism, config: SamplingConfig) -> DatasetWriter:
    return DatasetWriter.create(output, mech, config.dt, config.rtol, config.atol, REACTOR_NAME)


def _open_output(output: Path, mech: Mechanism, config: SamplingConfig, journal: Journal,
                 overwrite: bool, append: bool, states_sha256: list[str]
                 ) -> tuple[DatasetWriter, int, bool]:
    """Open or create the dataset; returns ``(writer, run index, resumed)``.

    A journal of this same command means an unfinished run: the file is rebuilt from it,
    whatever state the file was left in. Otherwise an existing file is refused (InputError)
    unless it holds an unfinished run of the same configuration (resumed from the file),
    ``overwrite`` (replaced) or ``append`` (a new run is added).
    """
    identity = _identity(mech, config, states_sha256)
    if overwrite:
        output.unlink(missing_ok=True)
        journal.remove()
    if journal.exists() and journal.meta().get("identity") == identity:
        return _rebuild(output, mech, config, journal), journal.meta()["run_index"], True
    if not output.exists():
        journal.create({"identity": identity, "run_index": 0, "appending": False})
        with _closed_on_error(_new_file(output, mech, config)) as writer:
            return writer, writer.start_run(config.to_dict()), False

    with _closed_on_error(DatasetWriter.open(output)) as writer:
        facts = writer.facts()
        if facts.mechanism_sha256 != mech.sha256:
            raise InputError(f"output: {output} was made from another mechanism "
                             f"({facts.mechanism_source}, phase {facts.phase}, sha256 "
                             f"{facts.mechanism_sha256[:12]}…); refusing to add rows of "
                             f"{mech.source} (sha256 {mech.sha256[:12]}…)")
        if facts.dt_s != config.dt:
            raise InputError(f"output: {output} holds labels for dt = {facts.dt_s:g} s, "
                             f"not {config.dt:g} s; refusing to mix them")
        runs = writer.runs
        if runs and not runs[-1]["complete"]:
            if runs[-1]["config"] != config.to_dict():
                raise InputError(f"output: {output} holds an unfinished run with a different "
                                 "configuration; rerun that command to resume it, or pass "
                                 "--overwrite")
            # An unfinished run without its journal: the file's tasks are kept as they are.
            run = len(runs) - 1
            journal.create({"identity": identity, "run_index": run, "appending": run > 0})
            return writer, run, True
        if not append:
            raise InputError(f"output: {output} already exists ({writer.n_rows} rows); pass "
                             "--overwrite to replace it or --append to add a run to it")
    writer.close()
    journal.create({"identity": identity, "run_index": len(runs), "appending": True})
    journal.copy_base(output)
    with _closed_on_error(DatasetWriter.open(output)) as writer:
        return writer, writer.start_run(config.to_dict()), False


def _rebuild(output: Path, mech: Mechanism, config: SamplingConfig, journal: Journal
             ) -> DatasetWriter:
    """The file of an unfinished run made again: empty, or (an appending run) the copy taken
    before the run started, with the run recorded anew; its tasks then come from the journal."""
    if journal.meta().get("appending"):
        if not journal.base_copy.is_file():
            raise InputError(f"output: cannot resume the appending run on {output}: "
                             f"{journal.base_copy} (the file as it was before) is missing; "
                             "pass --overwrite to start again")
        try:
            shutil.copyfile(journal.base_copy, output)
        except OSError as exc:
            raise StorageError(f"output: cannot write {output} ({exc.strerror or exc})") from None
        writer = DatasetWriter.open(output)
    else:
        writer = _new_file(output, mech, config)
    with _closed_on_error(writer):
        writer.start_run(config.to_dict())
    return writer


@contextmanager
def _closed_on_error(writer: DatasetWriter) -> Iterator[DatasetWriter]:
    """``writer``, closed when the body fails, so that its file and lock are released at once."""
    try:
        yield writer
    except BaseException:
        writer.close()
        raise


def _run_stage(specs: list[TaskSpec], ctx: TaskContext, executor: Executor,
               writer: DatasetWriter, journal: Journal, bar: tqdm) -> int:
    """Execute ``specs`` and append their rows in task order; returns rows computed here."""
    done = writer.finished_tasks()
    pending = [s for s in specs if s.task_id not in done]
    to_run = [s for s in pending if not journal.has(s.index)]
    in_memory: dict[int, TaskResult] = {}
    counted: set[int] = set()  # computed in this session, already on the progress bar
    ready = {s.index for s in pending if journal.has(s.index)}
    position = 0
    computed = 0

    def flush() -> None:
        nonlocal position
        while position < len(pending) and pending[position].index in ready:
            spec = pending[position]
            res = in_memory.pop(spec.index, None)
            if res is not None:
                writer.append_task(res.task_id, res.inputs, res.targets, res.source, res.status)
            else:
                saved = journal.load(spec.index)
                if saved is None:  # damaged part: compute it again, in order
                    res = execute_task(spec, ctx)
                    journal.save(spec.index, res.task_id, res.inputs, res.targets, res.source,
                                 res.status)
                    saved = (res.task_id, res.inputs, res.targets, res.source, res.status)
                writer.append_task(*saved)
                if spec.index not in counted:  # a part of an earlier session
                    bar.update(len(saved[1]))
            position += 1

    flush()
    if to_run:
        handle = executor.share(ctx)
        jobs = ((s.index, (s, handle)) for s in to_run)
        for index, res in executor.map_unordered(execute_task, jobs):
            journal.save(index, res.task_id, res.inputs, res.targets, res.source, res.status)
            in_memory[index] = res
            ready.add(index)
            computed += len(res.inputs)
            bar.update(len(res.inputs))
            counted.add(index)
            flush()
            # A result that waits for an earlier task (a long flame sweep runs first) is read
            # back from its journal part when its turn comes: memory stays one task's worth.
            in_memory.pop(index, None)
    flush()
    writer.write_pending()
    return computed


def run_sampling(config: SamplingConfig, output: str | Path, workers: int | None = None,
                 scheduler: str | None = None, overwrite: bool = False, append: bool = False,
                 progress: bool = True, executor: Executor | None = None,
                 log: Callable[[str], None] | None = None) -> SamplingSummary:
    """Generate (or resume) a labelled dataset as ``config`` describes, into ``output`` (HDF5).

    ``workers`` worker processes on a local Dask cluster (``0`` runs inline), or an existing
    cluster at ``scheduler``. Raises :class:`InputError` for bad input before any work starts
    and :class:`StorageError` when the disk refuses a write (the journal then keeps every
    finished task); an interrupted or stopped run is resumed by calling again with the same
    arguments.
    """
    started = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    output = Path(output)
    mech = load_mechanism(config.mechanism, config.phase)
    diluents = check_against_mechanism(config, mech)
    reason = why_not_writable(output)
    if reason:
        raise InputError(f"output: cannot write {output}: {reason}")
    if scheduler:
        check_scheduler_address(scheduler)
    if config.scatter_only and not (append and output.exists()):
        raise InputError(f"rows: {', '.join(SCATTER_SOURCES)} samples need manifold rows "
                         "(autoignition, free_flame or counterflow) to start from: give some, "
                         "or --append to a dataset that has them")
    run_states = load_run_states(config, mech)
    journal = Journal.for_output(output)
    try:
        writer, run, resumed = _open_output(output, mech, config, journal, overwrite, append,
                                            [f.sha256 for f in run_states[1]] if run_states else [])
    except PermissionError as exc:
        raise InputError(f"output: cannot write {output}: {exc.strerror}")
    notes: list[str] = []
    try:
        manifold = plan_manifold(config, mech, run, notes)
        if run_states is not None:
            states, states_facts, states_notes = run_states
            notes.extend(states_notes)
            manifold += plan_solver_states(config, states, run, len(manifold), notes)
            _record_states_files(writer, states_facts, resumed, output)
        for note in notes:
            log(f"note: {note}")
        total = sum(s.rows for s in manifold) + sum(
            config.rows.get(k, 0) for k in SCATTER_SOURCES)
        done_rows = _rows_of_run(writer, run)
        if resumed:
            log(f"resuming run {run} of {output}: {done_rows} rows in the file, "
                f"{len(journal.task_ids())} finished task(s) in {journal.directory}")
        ctx = TaskContext(yaml_text=mech.yaml_text, sha256=mech.sha256, phase=mech.phase,
                          dt_s=config.dt, rtol=config.rtol, atol=config.atol,
                          options=config.to_dict())
        own_executor = executor is None
        executor = executor or make_executor(workers, scheduler)
        computed = 0
        try:
            log(f"sampling {mech.source} into {output} on {executor.description}")
            with tqdm(total=total, initial=done_rows, unit="rows", desc="sampling",
                      disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 15.0,
                      smoothing=0.1,
                      file=sys.stderr) as bar:
                computed += _run_stage(manifold, ctx, executor, writer, journal, bar)
                # A run of scattered sources alone starts from the file's earlier manifold rows.
                states = writer.rows_of_sources(MANIFOLD_SOURCES,
                                                None if config.scatter_only else run)
                scatter_rows = sum(config.rows.get(k, 0) for k in SCATTER_SOURCES)
                if scatter_rows and len(states) == 0:
                    notes.append(f"no manifold rows were produced; {', '.join(SCATTER_SOURCES)} "
                                 "skipped")
                elif scatter_rows:
                    ranges = manifold_ranges(states, diluents, config.multiscale.margin_decades)
                    limits = rate_limits(mech.solution(), states)
                    ctx.ranges, ctx.limits = ranges.to_dict(), limits.to_dict()
                    writer.update_run(ranges=ctx.ranges, rate_limits=ctx.limits)
                    scatter = plan_scatter(config, run, len(manifold), states)
                    computed += _run_stage(scatter, ctx, executor, writer, journal, bar)
        finally:
            if own_executor:
                executor.close()
        summary = _summarise(writer, run, output, resumed, notes)
        summary.seconds = time.perf_counter() - started
        summary.rows_computed = computed
        writer.finish_run(summary.to_dict(), journal)
    finally:
        writer.close()
    journal.remove()
    return summary


def _record_states_files(writer: DatasetWriter, facts: list, resumed: bool, output: Path) -> None:
    """Record the states files (path, sha256, origin) in the run; a resumed run whose files
    changed since it started is refused, as its finished tasks hold the old states."""
    recorded = writer.runs[-1].get("solver_states")
    now = [f.to_dict() for f in facts]
    if resumed and recorded is not None:
        for old, new in zip(recorded, now):
            if old["sha256"] != new["sha256"]:
                raise InputError(f"solver_states.files: {new['path']} changed since this run of "
                                 f"{output} started (sha256 {old['sha256'][:12]}… then, "
                                 f"{new['sha256'][:12]}… now); restore it, or pass --overwrite")
    writer.update_run(solver_states=now)


def _rows_of_run(writer: DatasetWriter, run: int) -> int:
    return sum(t.stop - t.start for t in writer.tasks(run))


def _summarise(writer: DatasetWriter, run: int, output: Path, resumed: bool,
               notes: list[str]) -> SamplingSummary:
    per_source = dict.fromkeys(SOURCE_NAMES, 0)
    failed, partial = [], []
    for t in writer.tasks(run):
        per_source[t.source] += t.stop - t.start
        if t.status.startswith("failed"):
            failed.append(f"{t.task_id}: {t.status}")
        elif t.status != "ok":
            partial.append(f"{t.task_id}: {t.status}")
    return SamplingSummary(str(output), run, resumed, per_source, failed, partial, notes)
