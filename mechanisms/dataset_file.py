"""The dataset file (HDF5): its schema and every reader (see ``docs/dataset.md``, the contract).

Layout (schema version 1):

- ``inputs``, ``targets``: ``[N, 2+ns]`` float64 states at t and t + dt (``[T, P, Y...]``);
- ``source``: ``[N]`` uint8, index into the ``source_names`` attribute;
- ``mechanism_yaml``: the mechanism text (a scalar string);
- ``tasks/id``, ``tasks/rows``, ``tasks/status``: one entry per finished task, in row order; the
  rows of task i follow those of task i − 1. Rows beyond the recorded tasks are debris of an
  interrupted write: readers ignore them, the writer cuts them off on resume;
- attributes: ``schema_version``, ``mechanism_sha256``, ``mechanism_source``, ``phase_name``,
  ``species_names``, ``dt`` (s), ``reactor``, ``rtol``, ``atol``, ``source_names``, ``runs``
  (JSON list; each run holds its sampler configuration), ``sampler_config`` (JSON of the last run),
  ``complete``, ``cantera_version``, ``deepkin_version``, ``created``.

The one writer is ``sampling.dataset_writer.DatasetWriter``. Readers open a file through
:func:`open_dataset`, which checks the schema and parses the file's :class:`DatasetFacts` once;
every way a file can be unusable is one :class:`InputError` line from here. Every invariant the
writer guarantees (``deepkin dataset check``) is checked by ``mechanisms/dataset_check.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mechanisms.errors import InputError
from mechanisms.state import column_names, mass_fractions, pressure, temperature

SCHEMA_VERSION = 1
# A row's source code (the ``source`` dataset) is the index of its source here: codes are only
# ever appended, never reordered, so that a code keeps its meaning in every file written.
SOURCE_NAMES = ("autoignition", "free_flame", "counterflow", "multiscale", "perturbed", "emcs",
                "equilibrium", "solver_states", "rollout")
ROW_DATASETS = ("inputs", "targets", "source")  # one entry per row, resized together
TASK_DATASETS = ("tasks/id", "tasks/rows", "tasks/status")  # one entry per finished task
# What every reader relies on (the writer also records reactor, tolerances and provenance).
REQUIRED_ATTRIBUTES = ("schema_version", "mechanism_sha256", "mechanism_source", "phase_name",
                       "species_names", "dt", "source_names", "complete")
# What h5py raises for a file it cannot read (a torn or truncated file, a failed filter).
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def source_code(name: str) -> int:
    """The uint8 code stored in ``source`` for source ``name``."""
    return SOURCE_NAMES.index(name)


def check_schema(h5: h5py.File, path: str | Path, field: str = "dataset") -> None:
    """InputError (prefixed ``field:``) unless ``h5`` is a dataset file of this schema."""
    if "schema_version" not in h5.attrs:
        raise InputError(f"{field}: {path} is not a deepkin dataset (no schema_version)")
    version = h5.attrs["schema_version"]
    if version != SCHEMA_VERSION:
        raise InputError(f"{field}: {path} has dataset schema {version!r}, "
                         f"this deepkin reads and writes {SCHEMA_VERSION}")
    for name in (*ROW_DATASETS, "mechanism_yaml", *TASK_DATASETS):
        if name not in h5:
            raise InputError(f"{field}: {path} lacks '{name}'; not a deepkin dataset")
    for name in REQUIRED_ATTRIBUTES:
        if name not in h5.attrs:
            raise InputError(f"{field}: {path} lacks the attribute '{name}'; not a deepkin dataset")


def recorded_rows(h5: h5py.File) -> int:
    """Rows of the recorded tasks: ``sum(tasks/rows)``."""
    return int(h5["tasks/rows"][...].sum())


@dataclass(frozen=True)
class TaskEntry:
    """One recorded task: its id (``r<run>/<source>/<number>``), rows ``[start, stop)`` and
    status."""

    task_id: str
    start: int
    stop: int
    status: str

    @property
    def run(self) -> int:
        return int(self.task_id.split("/")[0][1:])

    @property
    def source(self) -> str:
        return self.task_id.split("/")[1]


def task_table(h5: h5py.File, run_index: int | None = None) -> list[TaskEntry]:
    """Every recorded task in row order; only those of run ``run_index`` when given."""
    ids = h5["tasks/id"].asstr()[...].tolist()
    rows = h5["tasks/rows"][...]
    status = h5["tasks/status"].asstr()[...].tolist()
    ends = np.cumsum(rows)
    table = [TaskEntry(i, int(e - r), int(e), st) for i, r, e, st in zip(ids, rows, ends, status)]
    if run_index is not None:
        table = [t for t in table if t.run == run_index]
    return table


@dataclass
class DatasetFacts:
    """What a dataset file says about itself, parsed once.

    ``n_rows``: the valid rows (those of recorded tasks that reached ``inputs``); ``dt_s``: the
    label step (s); ``species``: the order of the Y columns; ``runs``: one dict per sampling run
    (its ``config``, ``complete``, ``summary``, …); ``sampler_config``: the last run's config.
    """

    path: str
    n_rows: int
    species: list[str]
    dt_s: float
    mechanism_sha256: str
    mechanism_source: str
    mechanism_yaml: str
    phase: str
    source_names: list[str]
    sampler_config: dict
    runs: list[dict]
    complete: bool


def read_facts(h5: h5py.File, path: str | Path, field: str = "dataset") -> DatasetFacts:
    """Check the schema of an open file and parse its facts; InputError when it is unusable."""
    check_schema(h5, path, field)
    a = h5.attrs
    try:
        return DatasetFacts(
            path=str(path), n_rows=max(0, min(recorded_rows(h5), h5["inputs"].shape[0])),
            species=json.loads(a["species_names"]), dt_s=float(a["dt"]),
            mechanism_sha256=str(a["mechanism_sha256"]),
            mechanism_source=str(a["mechanism_source"]),
            mechanism_yaml=h5["mechanism_yaml"].asstr()[()], phase=str(a["phase_name"]),
            source_names=json.loads(a["source_names"]),
            sampler_config=json.loads(a.get("sampler_config", "{}")),
            runs=json.loads(a.get("runs", "[]")), complete=bool(a["complete"]))
    except H5_ERRORS as exc:
        raise InputError(f"{field}: {path} is not a readable deepkin dataset ({exc})")


@contextmanager
def open_dataset_file(path: str | Path) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only, unparsed: ``with open_dataset_file(p) as h5: ...``.

    Raises InputError when the file is missing or not HDF5.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset: {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"dataset: {path} is not a readable HDF5 file ({exc})")
    with h5:
        yield h5


@contextmanager
def open_dataset(path: str | Path) -> Iterator[tuple[h5py.File, DatasetFacts]]:
    """Open a dataset file read-only: ``with open_dataset(p) as (h5, facts): ...``.

    Raises InputError when the file is missing, not HDF5 or not a dataset of this schema.
    """
    with open_dataset_file(path) as h5:
        yield h5, read_facts(h5, path)


def dataset_facts(path: str | Path) -> DatasetFacts:
    """The facts of the dataset file at ``path`` (see :func:`open_dataset` for the errors)."""
    with open_dataset(path) as (_, facts):
        return facts


# -- one line for a row that breaks the schema (shared with ``mechanisms/dataset_check.py``) ----------
def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


def unreadable_line(name: str, start: int, stop: int, exc: BaseException) -> str:
    """``"inputs: rows a–b cannot be read (why); the file is damaged"``."""
    return f"{name}: rows {start}–{stop} cannot be read ({_first_line(exc)}); the file is damaged"


def non_finite_line(name: str, row: np.ndarray, index: int, columns: list[str]) -> str:
    """``"inputs: row 5 holds nan in column O"`` for a state row ``[2+ns]`` that is not finite."""
    row = np.asarray(row).reshape(-1)
    j = int(np.flatnonzero(~np.isfinite(row))[0])
    column = columns[j] if j < len(columns) else str(j)
    return f"{name}: row {index} holds {row[j]} in column {column}"


def bad_source_line(index: int, code: int, n_names: int) -> str:
    """``"source: row 5 has code 99, outside source_names (0–7)"``."""
    return f"source: row {index} has code {code}, outside source_names (0–{n_names - 1})"


def read_rows(h5: h5py.File, name: str, start: int, stop: int, path: str | Path) -> np.ndarray:
    """Rows ``[start, stop)`` of the row dataset ``name``; InputError (``dataset: PATH: name:
    rows a–b cannot be read …``) when a chunk cannot be decoded."""
    try:
        return h5[name][start:stop]
    except H5_ERRORS as exc:
        raise InputError(f"dataset: {path}: {unreadable_line(name, start, stop, exc)}")


def read_sources(facts: DatasetFacts) -> np.ndarray:
    """The source code ``[n]`` (uint8) of every valid row of the dataset ``facts`` describe."""
    with open_dataset_file(facts.path) as h5:
        return read_rows(h5, "source", 0, facts.n_rows, facts.path)


def source_codes(facts: DatasetFacts, sources: list[str] | tuple[str, ...]) -> list[int]:
    """The codes of ``sources`` in this file; InputError naming any the file does not know."""
    unknown = [s for s in sources if s not in facts.source_names]
    if unknown:
        raise InputError(f"sources: unknown source(s) {', '.join(unknown)} "
                         f"(dataset has {', '.join(facts.source_names)})")
    return [facts.source_names.index(s) for s in sources]


def read_dataset(path: str | Path, sources: tuple[str, ...] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inputs [n, 2+ns], targets [n, 2+ns], source [n] uint8)`` of every valid row of a
    dataset, or only of the rows of ``sources``."""
    with open_dataset(path) as (h5, facts):
        n = facts.n_rows
        source = h5["source"][:n]
        inputs = h5["inputs"][:n]
        targets = h5["targets"][:n]
    if sources is not None:
        mask = np.isin(source, source_codes(facts, sources))
        return inputs[mask], targets[mask], source[mask]
    return inputs, targets, source


@dataclass
class RowBlock:
    """Rows ``[start, stop)`` of a dataset, less those of other sources.

    ``inputs``/``targets``: ``[k, 2+ns]``; ``kept``: ``[k]`` positions of these rows within the
    block (``0 … stop − start − 1``), so that a per-row draw over the whole block can follow them.
    """

    start: int
    stop: int
    inputs: np.ndarray
    targets: np.ndarray
    kept: np.ndarray


class BlockReader:
    """Reads a dataset in blocks of ``block_rows`` rows, optionally only the rows of ``sources``.

    Memory stays bounded by one block whatever the file size; each :meth:`read` opens the file
    on its own, so that processes can share one reader's blocks (:meth:`blocks_of_rank`).
    """

    def __init__(self, facts: DatasetFacts, block_rows: int = 65536,
                 sources: list[str] | None = None):
        self.facts = facts
        self.block_rows = block_rows
        self.codes = source_codes(facts, sources) if sources else None
        self.n_blocks = max(1, -(-facts.n_rows // block_rows))

    def read(self, block: int) -> RowBlock:
        """The rows of block number ``block`` (of the chosen sources)."""
        a = block * self.block_rows
        b = min(a + self.block_rows, self.facts.n_rows)
        path = self.facts.path
        with open_dataset_file(path) as h5:
            inputs = read_rows(h5, "inputs", a, b, path)
            targets = read_rows(h5, "targets", a, b, path)
            source = read_rows(h5, "source", a, b, path) if self.codes is not None else None
        if source is None:
            return RowBlock(a, b, inputs, targets, np.arange(b - a))
        keep = np.isin(source, self.codes)
        return RowBlock(a, b, inputs[keep], targets[keep], np.flatnonzero(keep))

    def blocks_of_rank(self, rank: int = 0, world: int = 1) -> list[int]:
        """Block numbers of process ``rank`` of ``world``: disjoint shares of every block."""
        return [b for b in range(self.n_blocks) if b % world == rank]


@dataclass
class DatasetSummary:
    """What ``deepkin dataset info`` prints: ranges over the valid rows' inputs (T in K, P in Pa,
    Y per species), rows per source, runs and failed tasks."""

    path: str
    size_bytes: int
    n_rows: int
    rows_per_source: dict[str, int]
    species: list[str]
    dt_s: float
    mechanism_source: str
    mechanism_sha256: str
    phase: str
    complete: bool
    n_runs: int
    n_tasks: int
    failed_tasks: list[str]
    temperature_k: tuple[float, float]
    pressure_pa: tuple[float, float]
    y_min: list[float]
    y_max: list[float]
    attrs: dict[str, Any]

    def format(self) -> str:
        lines = [
            f"file        {self.path} ({self.size_bytes / 2**20:.2f} MiB)",
            f"status      {'complete' if self.complete else 'INCOMPLETE (rerun the same command to resume)'}"
            f", {self.n_runs} run(s), {self.n_tasks} task(s)",
            f"mechanism   {self.mechanism_source} (phase {self.phase}), sha256 {self.mechanism_sha256[:16]}…",
            f"dt          {self.dt_s:g} s, {self.attrs.get('reactor', '?')}, "
            f"rtol {self.attrs.get('rtol', '?'):g}, atol {self.attrs.get('atol', '?'):g}",
            f"rows        {self.n_rows}",
        ]
        for name, count in self.rows_per_source.items():
            lines.append(f"  {name:<12}{count:>10}")
        if self.n_rows:
            lines.append(f"T range     {self.temperature_k[0]:.1f} – {self.temperature_k[1]:.1f} K")
            lines.append(f"P range     {self.pressure_pa[0]:.6g} – {self.pressure_pa[1]:.6g} Pa")
            lines.append(f"species     {len(self.species)}   (Y min … max over inputs)")
            for name, lo, hi in zip(self.species, self.y_min, self.y_max):
                lines.append(f"  {name:<12}{lo:10.3e} … {hi:9.3e}")
        if self.failed_tasks:
            lines.append(f"failed      {len(self.failed_tasks)} task(s):")
            lines.extend(f"  {t}" for t in self.failed_tasks[:10])
        return "\n".join(lines)


def _refuse_bad_rows(path: Path, facts: DatasetFacts, start: int, inputs: np.ndarray,
                     source: np.ndarray) -> None:
    """InputError naming the first row of a block whose inputs are not finite or whose source
    code lies outside ``source_names`` (the rows a summary reads; the full checks are
    ``mechanisms/dataset_check.py``'s)."""
    finite = np.isfinite(inputs).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InputError(f"dataset: {path}: "
                         + non_finite_line("inputs", inputs[i], start + i, column_names(facts.species)))
    outside = np.flatnonzero(source >= len(facts.source_names))
    if len(outside):
        i = int(outside[0])
        raise InputError(f"dataset: {path}: "
                         + bad_source_line(start + i, int(source[i]), len(facts.source_names)))


def _widen(bounds: tuple[Any, Any], values: np.ndarray) -> tuple[Any, Any]:
    """``(lo, hi)`` widened to hold ``values`` (``[n]``, or ``[n, k]`` for ``[k]`` bounds)."""
    return np.minimum(bounds[0], values.min(axis=0)), np.maximum(bounds[1], values.max(axis=0))


def summarise_dataset(path: str | Path, block_rows: int = 200_000) -> DatasetSummary:
    """Summarise a dataset file, reading it in blocks of ``block_rows`` rows."""
    path = Path(path)
    with open_dataset(path) as (h5, facts):
        names = facts.source_names
        ns = len(facts.species)
        counts = np.zeros(len(names), dtype=np.int64)
        t_range, p_range = (np.inf, -np.inf), (np.inf, -np.inf)
        y_range = (np.full(ns, np.inf), np.full(ns, -np.inf))
        for start in range(0, facts.n_rows, block_rows):
            stop = min(start + block_rows, facts.n_rows)
            block = read_rows(h5, "inputs", start, stop, path)
            source = read_rows(h5, "source", start, stop, path)
            _refuse_bad_rows(path, facts, start, block, source)
            counts += np.bincount(source, minlength=len(names))
            t_range = _widen(t_range, temperature(block))
            p_range = _widen(p_range, pressure(block))
            y_range = _widen(y_range, mass_fractions(block))
        ids = h5["tasks/id"].asstr()[...]
        status = h5["tasks/status"].asstr()[...]
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    return DatasetSummary(
        path=str(path), size_bytes=path.stat().st_size, n_rows=facts.n_rows,
        rows_per_source={name: int(c) for name, c in zip(names, counts)},
        species=facts.species, dt_s=facts.dt_s, mechanism_source=facts.mechanism_source,
        mechanism_sha256=facts.mechanism_sha256, phase=facts.phase, complete=facts.complete,
        n_runs=len(facts.runs), n_tasks=len(ids),
        failed_tasks=[f"{i}: {s}" for i, s in zip(ids, status) if s != "ok"],
        temperature_k=(float(t_range[0]), float(t_range[1])),
        pressure_pa=(float(p_range[0]), float(p_range[1])),
        y_min=y_range[0].tolist(), y_max=y_range[1].tolist(), attrs=attrs)
