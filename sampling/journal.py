"""The run journal: each finished task's rows, saved atomically beside the dataset.

The dataset file is written in task order, but tasks finish out of order and an HDF5 file killed
mid-write can be left unreadable. Every result therefore lands first in
``<output>.journal/<task index>.npz`` (written to a temporary name, fsynced, renamed), so that a
killed run loses nothing: on restart the dataset is rebuilt from the journal when it cannot be
opened, and tasks found in the journal are not computed again. The journal is deleted when the
run completes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from mechanisms.atomic_io import atomic_write_npz, atomic_write_text


class Journal:
    """A directory of finished task results for one run."""

    def __init__(self, directory: Path):
        self.directory = directory

    @classmethod
    def for_output(cls, output: Path) -> Journal:
        return cls(output.with_name(output.name + ".journal"))

    def exists(self) -> bool:
        return (self.directory / "meta.json").is_file()

    def create(self, meta: dict) -> None:
        """Start an empty journal holding ``meta`` (the run's identity)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        atomic_write_text(self.directory / "meta.json", json.dumps(meta))

    def meta(self) -> dict:
        return json.loads((self.directory / "meta.json").read_text())

    @property
    def base_copy(self) -> Path:
        """Where a copy of the dataset as it was before an appending run is kept."""
        return self.directory / "base.h5"

    def _part(self, index: int) -> Path:
        return self.directory / f"{index:07d}.npz"

    def save(self, index: int, task_id: str, inputs: np.ndarray, targets: np.ndarray,
             source: int, status: str) -> None:
        """Save one task's result atomically and durably."""
        atomic_write_npz(self._part(index), inputs=inputs, targets=targets, source=np.uint8(source),
                         task_id=np.str_(task_id), status=np.str_(status))

    def load(self, index: int) -> tuple[str, np.ndarray, np.ndarray, int, str] | None:
        """``(task_id, inputs, targets, source, status)`` of task ``index``, or None."""
        path = self._part(index)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return (str(z["task_id"]), z["inputs"], z["targets"], int(z["source"]),
                        str(z["status"]))
        except (OSError, ValueError, KeyError):
            return None  # a damaged part is computed again

    def has(self, index: int) -> bool:
        return self._part(index).is_file()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
