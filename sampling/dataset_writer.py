"""The one writer of the dataset file (schema and readers: ``mechanisms/dataset_file.py``).

``DatasetWriter`` creates a file, records each sampling run and appends the rows of finished
tasks in task order and in batches; ``file_is_writable`` checks an output path before a run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any

import cantera as ct
import h5py
import numpy as np

from mechanisms.dataset_file import (
    ROW_DATASETS,
    SCHEMA_VERSION,
    SOURCE_NAMES,
    DatasetFacts,
    check_schema,
    read_facts,
    recorded_rows,
    source_code,
)
from mechanisms.loading import Mechanism
from mechanisms.state import column_names, state_width

CHUNK_BYTES = 1 << 20
_STR = h5py.string_dtype()
# A chunk cache larger than a chunk, so that appending to a partly filled gzip chunk does not
# decompress and recompress it on every write (it is compressed once, when flushed or evicted).
_CHUNK_CACHE = {"rdcc_nbytes": 32 << 20, "rdcc_nslots": 10007, "rdcc_w0": 1.0}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("deepkin")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "unknown"


class DatasetWriter:
    """The one writer of a dataset file: appends the rows of finished tasks, in task order."""

    def __init__(self, path: str | Path, h5: h5py.File):
        self.path = Path(path)
        self.h5 = h5
        self._last_flush = time.monotonic()
        self._pending: list[tuple] = []
        self._pending_rows = 0

    # -- creation and opening -------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, mechanism: Mechanism, dt_s: float, rtol: float,
               atol: float, reactor: str) -> DatasetWriter:
        """Create a new, empty dataset file (replacing any file at ``path``)."""
        ns = mechanism.n_species
        width = state_width(ns)
        chunk_rows = max(1, CHUNK_BYTES // (8 * width))
        h5 = h5py.File(path, "w", **_CHUNK_CACHE)
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
        return cls(path, h5)

    @classmethod
    def open(cls, path: str | Path) -> DatasetWriter:
        """Open an existing dataset for appending; cuts rows beyond the recorded tasks."""
        h5 = h5py.File(path, "r+", **_CHUNK_CACHE)
        writer = cls(path, h5)
        check_schema(h5, path, "output")
        writer.truncate_to_tasks()
        return writer

    def facts(self) -> DatasetFacts:
        """What the file says about itself (mechanism, dt, runs, …), parsed now."""
        return read_facts(self.h5, self.path, "output")

    # -- runs ------------------------------------------------------------------------------------
    @property
    def runs(self) -> list[dict[str, Any]]:
        return json.loads(self.h5.attrs["runs"])

    def _set_runs(self, runs: list[dict[str, Any]]) -> None:
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

    def finish_run(self, summary: dict[str, Any]) -> None:
        """Mark the last run complete and store its summary (rows per source, failures, ...)."""
        self.write_pending()
        runs = self.runs
        runs[-1].update(finished=_now(), complete=True, summary=summary)
        self._set_runs(runs)

    def update_run(self, **fields: Any) -> None:
        runs = self.runs
        runs[-1].update(fields)
        self._set_runs(runs)

    # -- tasks and rows --------------------------------------------------------------------------
    def task_table(self, run_index: int | None = None) -> list[tuple[str, int, int, str]]:
        """``(task id, first row, end row, status)`` of every recorded task, in row order;
        only those of run ``run_index`` when given. Queued tasks are written first."""
        self.write_pending()
        ids = self.h5["tasks/id"].asstr()[...].tolist()
        rows = self.h5["tasks/rows"][...]
        status = self.h5["tasks/status"].asstr()[...].tolist()
        ends = np.cumsum(rows)
        table = [(i, int(e - r), int(e), st) for i, r, e, st in zip(ids, rows, ends, status)]
        if run_index is not None:
            table = [t for t in table if t[0].startswith(f"r{run_index}/")]
        return table

    def finished_tasks(self) -> dict[str, str]:
        """``{task id: status}`` of every recorded task."""
        return {tid: status for tid, _, _, status in self.task_table()}

    @property
    def n_rows(self) -> int:
        return recorded_rows(self.h5)

    def truncate_to_tasks(self) -> None:
        """Cut rows written after the last recorded task (debris of an interrupted write).

        Raises ValueError when a dataset holds fewer rows than the recorded tasks (a write that
        never reached the disk): the caller rebuilds the file from the run journal.
        """
        n = self.n_rows
        for name in ROW_DATASETS:
            if self.h5[name].shape[0] < n:
                raise ValueError(f"{name} holds {self.h5[name].shape[0]} rows, tasks record {n}")
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
        """
        self._pending.append((task_id, inputs, targets, source, status))
        self._pending_rows += len(inputs)
        if (self._pending_rows >= self.h5["inputs"].chunks[0]
                or time.monotonic() - self._last_flush >= flush_every_s):
            self.write_pending()

    def write_pending(self) -> None:
        """Append the queued tasks' rows, then record the tasks, then flush the file."""
        if not self._pending:
            return
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
        self._pending.clear()
        self._pending_rows = 0
        self._last_flush = time.monotonic()

    def rows_of_sources(self, names: tuple[str, ...], run_index: int) -> np.ndarray:
        """Input states ``[n, 2+ns]`` of the given sources written by run ``run_index``."""
        codes = {source_code(n) for n in names}
        parts = []
        for _, a, b, _ in self.task_table(run_index):
            if b > a and self.h5["source"][a] in codes:
                parts.append(self.h5["inputs"][a:b])
        width = self.h5["inputs"].shape[1]
        return np.concatenate(parts) if parts else np.empty((0, width))

    def close(self) -> None:
        if self.h5.id.valid:
            self.write_pending()
            self.h5.flush()
            self.h5.close()


def file_is_writable(path: Path) -> str | None:
    """None when ``path`` can be created or written, else the reason."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if path.exists() and path.is_dir():
        return f"{path} is a directory"
    if not os.access(parent, os.W_OK):
        return f"directory {parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
