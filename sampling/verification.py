"""Reading a run back: its rows in the dataset file against the run journal.

A run is marked complete only after this check passes on the closed file, flushed to the disk
(fsync) and dropped from the page cache, so that what is read is what the disk holds. Every row
of every task of the run is read (each gzip chunk is decompressed, so a torn chunk cannot pass)
and compared bit for bit with the task's journal part, and every task in the journal must be in
the file. Tasks without a readable part (a run resumed from a file whose journal had been
deleted) are read but cannot be compared.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mechanisms.dataset_file import H5_ERRORS, ROW_DATASETS, open_dataset, task_table
from mechanisms.errors import InputError, StorageError
from sampling.journal import Journal


def verify_run(path: Path, journal: Journal, run_index: int, block_rows: int = 65536) -> None:
    """Raise :class:`StorageError` naming the first difference unless the rows of run
    ``run_index`` in the dataset at ``path`` read back equal to ``journal``."""
    try:
        with open_dataset(path) as (h5, _):
            problem = _first_difference(h5, journal, run_index, block_rows)
    except (InputError, *H5_ERRORS) as exc:
        problem = f"it cannot be read ({str(exc).splitlines()[0][:160]})"
    if problem:
        raise StorageError(f"output: {path} does not read back as written: {problem}")


def _first_difference(h5: h5py.File, journal: Journal, run_index: int,
                      block_rows: int) -> str | None:
    tasks = task_table(h5, run_index)
    parts = journal.task_ids()
    missing = sorted(set(parts) - {t.task_id for t in tasks})
    if missing:
        return f"task {missing[0]} of the journal is not in the file"
    window = _RowWindow(h5, block_rows)
    for task in tasks:
        inputs, targets, source = window.read(task.start, task.stop)
        saved = journal.load(parts[task.task_id]) if task.task_id in parts else None
        if saved is None:
            continue
        _, want_inputs, want_targets, want_source, want_status = saved
        same = (task.status == want_status
                and np.array_equal(inputs, want_inputs, equal_nan=True)
                and np.array_equal(targets, want_targets, equal_nan=True)
                and len(source) == len(want_inputs) and bool((source == want_source).all()))
        if not same:
            return f"the rows of task {task.task_id} differ from the journal"
    return None


class _RowWindow:
    """``inputs``, ``targets`` and ``source`` rows read in blocks of ``block_rows`` as tasks ask
    for them in row order (each row is read once)."""

    def __init__(self, h5: h5py.File, block_rows: int):
        self.h5 = h5
        self.block_rows = block_rows
        self.start = self.stop = 0
        self.arrays: tuple[np.ndarray, ...] = ()

    def read(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """Rows ``[start, stop)`` of each row dataset (fewer where the file holds fewer)."""
        if not (self.start <= start and stop <= self.stop):
            self.start, self.stop = start, max(stop, start + self.block_rows)
            self.arrays = tuple(self.h5[name][self.start:self.stop] for name in ROW_DATASETS)
        return tuple(a[start - self.start:stop - self.start] for a in self.arrays)
