"""The one writer of the dataset file (schema and readers: ``mechanisms/dataset_file.py``).

``DatasetWriter`` creates a file, records each sampling run, appends the rows of finished tasks
in task order and in batches, and finishes a run durably: the file is closed, fsynced and read
back against the run journal (``sampling/verification.py``) before its ``complete`` attribute is
set. HDF5 writes through a :class:`~sampling.guarded_file.GuardedFile`, so that a full disk or an
I/O error stops the run with one :class:`StorageError` line instead of crashing the library.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cantera as ct
import h5py
import numpy as np

from mechanisms.atomic_io import fsync_path
from mechanisms.dataset_check import DatasetDamaged, structure_problems
from mechanisms.dataset_file import (
    H5_ERRORS,
    ROW_DATASETS,
    SCHEMA_VERSION,
    SOURCE_NAMES,
    DatasetFacts,
    TaskEntry,
    check_schema,
    dataset_facts,
    non_finite_line,
    read_facts,
    recorded_rows,
    source_code,
    task_table,
)
from mechanisms.errors import DeepkinError, InputError, StorageError
from mechanisms.loading import Mechanism
from mechanisms.state import column_names, state_width
from sampling.guarded_file import FileLocked, GuardedFile
from sampling.journal import Journal
from sampling.verification import verify_run

CHUNK_BYTES = 1 << 20
_STR = h5py.string_dtype()
# A chunk cache larger than a chunk, so that appending to a partly filled gzip chunk does not
# decompress and recompress it on every write (it is compressed once, when flushed or evicted).
_CHUNK_CACHE = {"rdcc_nbytes": 32 << 20, "rdcc_nslots": 10007, "rdcc_w0": 1.0}
# Writers not yet closed. HDF5 still flushing into a GuardedFile while the interpreter tears
# down crashes the process (SIGSEGV after a failed write), so whatever an error left open is
# closed at exit, before that.
_OPEN: set[DatasetWriter] = set()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("deepkin")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "unknown"


class DatasetWriter:
    """The one writer of a dataset file: appends the rows of finished tasks, in task order.

    Every method that writes raises :class:`StorageError` once the disk has refused a write;
    from then on the file on the disk is torn and is rebuilt from the journal by the next run.
    """

    def __init__(self, path: str | Path, guard: GuardedFile, h5: h5py.File):
        self.path = Path(path)
        self.guard = guard
        self.h5 = h5
        self._last_flush = time.monotonic()
        self._pending: list[tuple] = []
        self._pending_rows = 0

    # -- creation and opening -------------------------------------------------------------------
    @classmethod
    def _open_file(cls, path: Path, mode: str) -> DatasetWriter:
        """The file at ``path`` opened through a :class:`GuardedFile` (``"w"`` or ``"r+"``);
        InputError when another process writes it or it is not HDF5, StorageError when it
        cannot be opened or created."""
        try:
            guard = GuardedFile(path, mode)
        except FileLocked:
            raise InputError(f"output: {path} is being written by another process")
        except OSError as exc:
            raise StorageError(f"output: cannot open {path} ({exc.strerror or exc})") from None
        try:
            h5 = h5py.File(guard, mode, **_CHUNK_CACHE)
        except H5_ERRORS as exc:
            guard.close()
            if guard.failure is not None:
                raise StorageError(f"output: cannot write {path} ({guard.failure.strerror})")
            raise InputError(f"output: {path} exists but is not a readable dataset "
                             f"({type(exc).__name__}); pass --overwrite to replace it")
        writer = cls(path, guard, h5)
        _OPEN.add(writer)
        if guard.failure is not None:
            writer._release()
            writer._check()
        return writer

    @classmethod
    def create(cls, path: str | Path, mechanism: Mechanism, dt_s: float, rtol: float,
               atol: float, reactor: str) -> DatasetWriter:
        """Create a new, empty dataset file (replacing any file at ``path``)."""
        writer = cls._open_file(Path(path), "w")
        try:
            with writer._writing():
                writer._create_layout(mechanism, dt_s, rtol, atol, reactor)
        except StorageError:
            writer._release()
            raise
        return writer

    def _create_layout(self, mechanism: Mechanism, dt_s: float, rtol: float, atol: float,
                       reactor: str) -> None:
        h5 = self.h5
        ns = mechanism.n_species
        width = state_width(ns)
        chunk_rows = max(1, CHUNK_BYTES // (8 * width))
        for name in ("inputs", "targets"):
            ds = h5.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype="f8",
                                   chunks=(chunk_rows, width), compression="gzip",
                                   compression_opts=4, shuffle=True)
            ds.attrs["columns"] = json.dumps(column_names(mechanism.species_names))
            ds.attrs["units"] = "T: K, P: Pa, Y: mass fraction"
        h5.create_dataset("source", shape=(0,), maxshape=(None,), dtype="u1",
                          chunks=(max(1024, chunk_rows),), compression="gzip", shuffle=True)
        h5.create_dataset("mechanism_yaml", data=mechanism.yaml_text, dtype=_STR)
        tasks = h5.create_group("tasks")
        tasks.create_dataset("id", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))
        tasks.create_dataset("rows", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,))
        tasks.create_dataset("status", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))
        a = h5.attrs
        a["schema_version"] = SCHEMA_VERSION
        a["mechanism_sha256"] = mechanism.sha256
        a["mechanism_source"] = mechanism.source
        a["phase_name"] = mechanism.phase
        a["species_names"] = json.dumps(mechanism.species_names)
        a["dt"] = float(dt_s)
        a["reactor"] = f"{reactor} (adiabatic)"
        a["rtol"] = float(rtol)
        a["atol"] = float(atol)
        a["source_names"] = json.dumps(list(SOURCE_NAMES))
        a["runs"] = "[]"
        a["sampler_config"] = "{}"
        a["complete"] = False
        a["cantera_version"] = ct.__version__
        a["deepkin_version"] = _version()
        a["created"] = _now()
        h5.flush()

    @classmethod
    def open(cls, path: str | Path) -> DatasetWriter:
        """Open an existing dataset for appending; cuts rows beyond the recorded tasks.

        InputError when the file is not a dataset of this schema, fails the cheap checks of
        ``mechanisms/dataset_check.py`` (attributes, tasks, mechanism, shapes) or holds fewer
        rows than its tasks record (damaged).
        """
        writer = cls._open_file(Path(path), "r+")
        try:
            check_schema(writer.h5, path, "output")
            problems, _ = structure_problems(writer.h5, path)
            if problems:
                raise DatasetDamaged(path, problems, full=False, prefix="output")
            writer._extend_source_names()
            writer.truncate_to_tasks()
        except (InputError, StorageError):
            writer._release()
            raise
        return writer

    def _extend_source_names(self) -> None:
        """A file written before a source was added gets the longer list (codes are only ever
        appended, so its rows keep their meaning); a list that is not a prefix is refused."""
        names = json.loads(self.h5.attrs["source_names"])
        if names == list(SOURCE_NAMES):
            return
        if names != list(SOURCE_NAMES[:len(names)]):
            raise InputError(f"output: {self.path} numbers its sources otherwise "
                             f"({', '.join(names)}); refusing to add rows to it")
        with self._writing():
            self.h5.attrs["source_names"] = json.dumps(list(SOURCE_NAMES))
            self.h5.flush()

    def facts(self) -> DatasetFacts:
        """What the file says about itself (mechanism, dt, runs, …), parsed now."""
        return read_facts(self.h5, self.path, "output")

    # -- failures --------------------------------------------------------------------------------
    def _check(self) -> None:
        """StorageError once the disk has refused a write to this file."""
        failure = self.guard.failure
        if failure is not None:
            raise StorageError(f"output: cannot write {self.path} ({failure.strerror or failure})")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around HDF5 writes: StorageError when the disk refused one (before or during)."""
        self._check()
        try:
            yield
        except H5_ERRORS:
            if self.guard.failure is None:
                raise
        self._check()

    # -- runs ------------------------------------------------------------------------------------
    @property
    def runs(self) -> list[dict[str, Any]]:
        return json.loads(self.h5.attrs["runs"])

    def _set_runs(self, runs: list[dict[str, Any]]) -> None:
        with self._writing():
            self.h5.attrs["runs"] = json.dumps(runs)
            self.h5.attrs["sampler_config"] = json.dumps(runs[-1]["config"]) if runs else "{}"
            self.h5.attrs["complete"] = bool(runs and runs[-1]["complete"])
            self.h5.flush()

    def start_run(self, config: dict[str, Any]) -> int:
        """Record a new run with its sampler configuration; returns its index."""
        runs = self.runs
        runs.append({"index": len(runs), "config": config, "started": _now(), "finished": None,
                     "complete": False, "summary": {}})
        self._set_runs(runs)
        return len(runs) - 1

    def update_run(self, **fields: Any) -> None:
        runs = self.runs
        runs[-1].update(fields)
        self._set_runs(runs)

    def finish_run(self, summary: dict[str, Any], journal: Journal) -> None:
        """Finish the last run durably, then mark it complete.

        The queued rows and the summary are written, the file is closed and fsynced, its rows of
        this run are read back from the disk and compared with ``journal``, and only then is
        ``complete`` set (and read back). StorageError when any step fails; the journal is then
        still whole and the next run rebuilds the file from it. The writer is closed afterwards.
        """
        self.write_pending()
        self.update_run(finished=_now(), summary=summary)
        run = len(self.runs) - 1
        self._close_durably()
        verify_run(self.path, journal, run)
        marker = DatasetWriter._open_file(self.path, "r+")
        try:
            marker.update_run(complete=True)
            marker._close_durably()
        finally:
            marker._release()
        try:
            complete = dataset_facts(self.path).complete
        except InputError as exc:
            raise StorageError(f"output: {self.path} cannot be read after marking it complete "
                               f"({exc})")
        if not complete:
            raise StorageError(f"output: {self.path} does not read back as complete")

    # -- tasks and rows --------------------------------------------------------------------------
    def tasks(self, run_index: int | None = None) -> list[TaskEntry]:
        """Every recorded task in row order (only those of run ``run_index`` when given);
        queued tasks are written first."""
        self.write_pending()
        return task_table(self.h5, run_index)

    def finished_tasks(self) -> dict[str, str]:
        """``{task id: status}`` of every recorded task."""
        return {t.task_id: t.status for t in self.tasks()}

    @property
    def n_rows(self) -> int:
        return recorded_rows(self.h5)

    def truncate_to_tasks(self) -> None:
        """Cut rows written after the last recorded task (debris of an interrupted write).

        InputError when a dataset holds fewer rows than the recorded tasks (a write that never
        reached the disk).
        """
        n = self.n_rows
        for name in ROW_DATASETS:
            if self.h5[name].shape[0] < n:
                raise InputError(f"output: {self.path} is damaged ({name} holds "
                                 f"{self.h5[name].shape[0]} rows, its tasks record {n}); "
                                 "pass --overwrite to replace it")
        with self._writing():
            for name in ROW_DATASETS:
                if self.h5[name].shape[0] != n:
                    self.h5[name].resize(n, axis=0)
            self.h5.flush()

    def append_task(self, task_id: str, inputs: np.ndarray, targets: np.ndarray, source: int,
                    status: str, flush_every_s: float = 5.0) -> None:
        """Queue one task's rows; they reach the file in batches (see :meth:`write_pending`).

        Writing many small appends into gzip chunks costs far more than the labels they hold
        (each one decompresses and recompresses a partly filled chunk), so rows are written when
        a chunk's worth is queued or ``flush_every_s`` has passed. The run journal holds every
        task until the run completes, so nothing queued is lost when a run is killed.
        Rows that break the schema (another width, non-finite values, an unknown source code)
        are refused with DeepkinError: the file never holds them.
        """
        self._refuse_bad_rows(task_id, inputs, targets, source)
        self._pending.append((task_id, inputs, targets, source, status))
        self._pending_rows += len(inputs)
        if (self._pending_rows >= self.h5["inputs"].chunks[0]
                or time.monotonic() - self._last_flush >= flush_every_s):
            self.write_pending()

    def _refuse_bad_rows(self, task_id: str, inputs: np.ndarray, targets: np.ndarray,
                         source: int) -> None:
        """DeepkinError naming the task and the first bad row unless ``inputs`` and ``targets``
        are finite ``[n, 2+ns]`` arrays of the file's width and ``source`` a known code."""
        width = self.h5["inputs"].shape[1]
        where = f"output: task {task_id} of {self.path}"
        if not 0 <= source < len(SOURCE_NAMES):
            raise DeepkinError(f"{where}: source code {source} is not one of {SOURCE_NAMES}")
        for name, rows in (("inputs", inputs), ("targets", targets)):
            if rows.ndim != 2 or rows.shape != (len(inputs), width):
                raise DeepkinError(f"{where}: {name} has shape {rows.shape}, the file's rows "
                                   f"are [{len(inputs)}, {width}]")
            finite = np.isfinite(rows).all(axis=1)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                columns = column_names(json.loads(self.h5.attrs["species_names"]))
                raise DeepkinError(f"{where}: {non_finite_line(name, rows[i], i, columns)}; "
                                   "refusing to write it")

    def write_pending(self) -> None:
        """Append the queued tasks' rows, then record the tasks, then flush the file."""
        if not self._pending:
            return
        with self._writing():
            self._write_queued()
        self._pending.clear()
        self._pending_rows = 0
        self._last_flush = time.monotonic()

    def _write_queued(self) -> None:
        n_old = self.n_rows
        n_new = n_old + self._pending_rows
        if n_new > n_old:
            for name, k in (("inputs", 1), ("targets", 2)):
                ds = self.h5[name]
                ds.resize(n_new, axis=0)
                ds[n_old:n_new] = np.concatenate([p[k] for p in self._pending if len(p[1])])
            src = self.h5["source"]
            src.resize(n_new, axis=0)
            src[n_old:n_new] = np.concatenate([np.full(len(p[1]), p[3], dtype=np.uint8)
                                               for p in self._pending])
        k = self.h5["tasks/id"].shape[0]
        m = len(self._pending)
        for name, values in (("tasks/rows", [len(p[1]) for p in self._pending]),
                             ("tasks/status", [p[4] for p in self._pending]),
                             ("tasks/id", [p[0] for p in self._pending])):
            ds = self.h5[name]
            ds.resize(k + m, axis=0)
            ds[k:k + m] = values
        self.h5.flush()

    def rows_of_sources(self, names: tuple[str, ...], run_index: int | None) -> np.ndarray:
        """Input states ``[n, 2+ns]`` of the given sources written by run ``run_index`` (every
        run's when None)."""
        codes = {source_code(n) for n in names}
        parts = []
        for task in self.tasks(run_index):
            if task.stop > task.start and self.h5["source"][task.start] in codes:
                parts.append(self.h5["inputs"][task.start:task.stop])
        width = self.h5["inputs"].shape[1]
        return np.concatenate(parts) if parts else np.empty((0, width))

    # -- closing ---------------------------------------------------------------------------------
    def _close_durably(self) -> None:
        """Close the file, fsync it and its folder; StorageError when the disk refused any of
        it."""
        self.h5.close()
        self.guard.sync()
        self.guard.close()
        _OPEN.discard(self)
        self._check()
        try:
            fsync_path(self.path.parent)
        except OSError as exc:
            raise StorageError(f"output: cannot sync the folder of {self.path} ({exc.strerror})")

    def close(self) -> None:
        """Write the queued rows (unless the disk has already refused a write) and release the
        file, without finishing the run; StorageError when that write fails (the file is
        released all the same)."""
        try:
            if self.h5.id.valid and self.guard.failure is None:
                self.write_pending()
        finally:
            self._release()

    def _release(self) -> None:
        """Close the file now, dropping what is queued."""
        self._pending.clear()
        if self.h5.id.valid:
            self.h5.close()
        self.guard.close()
        _OPEN.discard(self)


@atexit.register
def _release_open_writers() -> None:
    for writer in list(_OPEN):
        writer._release()
