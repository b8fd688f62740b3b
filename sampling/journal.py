"""The run journal: each finished task's rows, saved atomically beside the dataset.

The dataset file is written in task order, but tasks finish out of order and an HDF5 file killed
mid-write, or written on a disk that filled up, can be left torn. Every result therefore lands
first in ``<output>.journal/<task index>.npz`` (written to a temporary name, fsynced, renamed),
so that a stopped run loses nothing: on restart the dataset is rebuilt from the journal and
tasks found in it are not computed again. The journal is deleted only once the finished file has
been read back equal to it (``sampling/verification.py``).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mechanisms.atomic_io import atomic_write_npz, atomic_write_text
from mechanisms.errors import StorageError


class Journal:
    """A directory of finished task results for one run.

    Every write raises :class:`StorageError` (naming the journal and the reason) when the disk
    refuses it.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    @classmethod
    def for_output(cls, output: Path) -> Journal:
        return cls(output.with_name(output.name + ".journal"))

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StorageError(f"journal: cannot write {what} in {self.directory} "
                               f"({exc.strerror or exc})") from None

    def exists(self) -> bool:
        return (self.directory / "meta.json").is_file()

    def create(self, meta: dict) -> None:
        """Start an empty journal holding ``meta`` (the run's identity)."""
        with self._writing("meta.json"):
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

    def copy_base(self, output: Path) -> None:
        """Keep a copy of ``output`` as it is before an appending run adds rows to it."""
        with self._writing(self.base_copy.name):
            shutil.copyfile(output, self.base_copy)

    def _part(self, index: int) -> Path:
        return self.directory / f"{index:07d}.npz"

    def save(self, index: int, task_id: str, inputs: np.ndarray, targets: np.ndarray,
             source: int, status: str) -> None:
        """Save one task's result atomically and durably."""
        with self._writing(f"task {task_id}"):
            atomic_write_npz(self._part(index), inputs=inputs, targets=targets,
                             source=np.uint8(source), task_id=np.str_(task_id),
                             status=np.str_(status))

    def load(self, index: int) -> tuple[str, np.ndarray, np.ndarray, int, str] | None:
        """``(task_id, inputs, targets, source, status)`` of task ``index``, or None."""
        return self._read(self._part(index), lambda z: (
            str(z["task_id"]), z["inputs"], z["targets"], int(z["source"]), str(z["status"])))

    def task_ids(self) -> dict[str, int]:
        """``{task id: task index}`` of every readable part (only the ids are read)."""
        ids = {}
        for path in sorted(self.directory.glob("[0-9]*.npz")):
            task_id = self._read(path, lambda z: str(z["task_id"]))
            if task_id is not None:
                ids[task_id] = int(path.stem)
        return ids

    def row_counts(self) -> dict[str, int] | None:
        """``{task id: rows}`` of every readable part, from the ``.npy`` headers only (no rows
        are read); None when there is no journal. ``deepkin dataset check`` compares them with
        the file's ``tasks/rows``."""
        if not self.exists():
            return None
        counts = {}
        for path in sorted(self.directory.glob("[0-9]*.npz")):
            entry = self._read(path, lambda z, p=path: (str(z["task_id"]), _rows_in_member(p)))
            if entry is not None:
                counts[entry[0]] = entry[1]
        return counts

    @staticmethod
    def _read(path: Path, take: Callable) -> object | None:
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return take(z)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # a damaged part is computed again

    def has(self, index: int) -> bool:
        return self._part(index).is_file()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _rows_in_member(path: Path, member: str = "inputs.npy") -> int:
    """The first dimension of array ``member`` of the ``.npz`` at ``path``, from its header."""
    with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        return int(read_header(fh)[0][0])
