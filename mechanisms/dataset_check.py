"""Every invariant the dataset writer guarantees, checked on a file (``deepkin dataset check``).

Two levels (see ``docs/dataset.md``, "Checking a file"):

- **cheap** (:func:`structure_problems`): the attributes, the task records (and, when given, a run
  journal's row counts), the embedded mechanism parsed with Cantera against ``species_names``,
  ``phase_name`` and ``mechanism_sha256``, and the shapes and types of the datasets. No row is
  read; ``deepkin train``, ``dataset info`` and ``sample --append`` run it wherever they open a file.
- **full** (:class:`RowScan`, :func:`scan_rows`): every valid row, read in blocks of bounded size
  (a multi-GB file is fine): finite values, ΣY ≈ 1 and Y ≥ −tol, T of the inputs within the
  mechanism's thermo range (up to the top most species fits reach,
  :func:`input_thermo_range_k`; of the targets > 0: a label may leave it, as Cantera
  extrapolates the NASA polynomials), P within :data:`~mechanisms.state.PRESSURE_RANGE_PA`,
  source codes within
  ``source_names`` and equal to their task's source, and every chunk decodable.

A problem is one line ``field: reason``; the user sees ``dataset: PATH: field: reason``
(:class:`DatasetDamaged`). A problem found in many rows is one line: the first row and the count.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mechanisms.dataset_file import (
    H5_ERRORS,
    SOURCE_NAMES,
    DatasetFacts,
    bad_source_line,
    check_schema,
    non_finite_line,
    open_dataset_file,
    read_facts,
    unreadable_line,
)
from mechanisms.errors import InputError, cantera_message
from mechanisms.loading import mechanism_sha256, solution_from_yaml
from mechanisms.state import PRESSURE_RANGE_PA, column_names, mass_fractions, pressure, temperature

# The bounds of the integrator's own input check (kinetics.integrator: SUM_TOLERANCE, Y_TOLERANCE):
# a row beyond them is one no model step would accept. The writer's rows lie far inside (ΣY within
# ~1e-13 of 1); a row labelled at a loose rtol without renormalisation, ~1e-7 (rtol 1e-6).
SUM_Y_TOLERANCE = 1e-4  # |ΣY − 1| allowed in a row
NEGATIVE_Y_TOLERANCE = 1e-6  # Y ≥ −this
# Relative slack on the mechanism's thermo range: a 300 K inlet comes back from Cantera as
# 299.99999999999994 K (rounding), which is the writer's row all the same.
THERMO_RANGE_SLACK = 1e-9
SCAN_BLOCK_BYTES = 32 << 20  # bytes of one array's block in the full scan (bounds its memory)
_TASK_ID = re.compile(r"r(\d+)/([A-Za-z_]+)/(\d+)")


def input_thermo_range_k(gas) -> tuple[float, float]:
    """The T range (K) a row's input may take: from the mechanism's thermo range's bottom up to
    the top that most of its species fits reach (their median). The phase's own top is its
    narrowest fit's (GRI-3.0: CH3O's 3,000 K, where most reach 3,500 K and N2 and Ar more); the
    sampler writes hotter rows all the same (rich methane at 20-25 atm burns past 3,000 K),
    labelled by Cantera, which extrapolates the few shorter fits as a CFD code's thermo does, and
    the integrator steps cells up to the hottest row a model was trained on."""
    tops = sorted(float(sp.thermo.max_temp) for sp in gas.species())
    top = tops[len(tops) // 2] if tops else float(gas.max_temp)
    return float(gas.min_temp), max(top, float(gas.max_temp))


class DatasetDamaged(InputError):
    """A dataset file breaks invariants its writer guarantees.

    ``problems``: every ``field: reason`` line found; the message is the first one, with the count
    of the others, as one line (``dataset: PATH: field: reason (and N more problem(s): …)``;
    ``output:`` instead of ``dataset:`` for a file opened to add rows to).
    """

    def __init__(self, path: str | Path, problems: list[str], full: bool, prefix: str = "dataset"):
        self.path = str(path)
        self.problems = problems
        more = len(problems) - 1
        hint = (f" (and {more} more problem(s): deepkin dataset check {path}"
                f"{' --full' if full else ''} lists them)" if more else "")
        super().__init__(f"{prefix}: {path}: {problems[0]}{hint}")


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: the problems (empty: the file is sound), the rows it
    holds and whether the rows were scanned."""

    path: str
    n_rows: int
    full: bool
    problems: list[str] = field(default_factory=list)


# -- cheap checks -----------------------------------------------------------------------------------
def _json_attr(attrs: Any, name: str, kind: type, problems: list[str]) -> Any:
    """The attribute ``name`` parsed as JSON of type ``kind``; None (and a problem) otherwise."""
    if name not in attrs:
        return None
    try:
        value = json.loads(attrs[name])
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: not JSON ({exc})")
        return None
    if not isinstance(value, kind):
        problems.append(f"{name}: must be a JSON {kind.__name__}, got {type(value).__name__}")
        return None
    return value


def _positive_attr(attrs: Any, name: str, unit: str, problems: list[str]) -> None:
    """A problem unless the attribute ``name`` (when present) is a finite number > 0."""
    if name not in attrs:
        return
    value = attrs[name]
    number, shown = math.nan, repr(value)
    if not isinstance(value, (bytes, str, bool, np.bool_)):
        try:
            number = float(value)
            shown = f"{number:g}"
        except (TypeError, ValueError):
            pass
    if not (math.isfinite(number) and number > 0):
        problems.append(f"{name}: must be a finite number > 0{unit}, got {shown}")


def _attribute_problems(h5: h5py.File) -> tuple[list[str], dict[str, Any]]:
    """Problems of the file's attributes, and what parsed: ``species``, ``source_names``,
    ``runs``."""
    a = h5.attrs
    problems: list[str] = []
    _positive_attr(a, "dt", " s", problems)
    _positive_attr(a, "rtol", "", problems)
    _positive_attr(a, "atol", "", problems)
    species = _json_attr(a, "species_names", list, problems)
    if species is not None and not (species and all(isinstance(s, str) for s in species)):
        problems.append("species_names: must be a non-empty JSON list of names")
        species = None
    names = _json_attr(a, "source_names", list, problems)
    if names is not None and not (names and names == list(SOURCE_NAMES[:len(names)])):
        problems.append(f"source_names: {names} is not {', '.join(SOURCE_NAMES)} or the start of "
                        "that list (a code must keep its meaning)")
        names = None
    runs = _json_attr(a, "runs", list, problems)
    if runs is not None and not all(isinstance(r, dict) and isinstance(r.get("config"), dict)
                                    for r in runs):
        problems.append("runs: every run must be a JSON object with its config")
        runs = None
    _json_attr(a, "sampler_config", dict, problems)
    complete = a["complete"]
    if not isinstance(complete, (bool, np.bool_)):
        problems.append(f"complete: must be true or false, got {complete!r}")
    elif runs is not None and bool(complete) != bool(runs and runs[-1].get("complete")):
        problems.append(f"complete: says {bool(complete)}, the last run in runs says "
                        f"{bool(runs and runs[-1].get('complete'))}")
    return problems, {"species": species, "source_names": names, "runs": runs}


def _mechanism_problems(h5: h5py.File, species: list[str] | None
                        ) -> tuple[list[str], Any]:
    """Problems of the embedded mechanism against ``mechanism_sha256``, ``phase_name`` and
    ``species_names``; and its ``ct.Solution`` when Cantera loads it (else None)."""
    problems: list[str] = []
    try:
        yaml_text = h5["mechanism_yaml"].asstr()[()]
    except H5_ERRORS + (UnicodeDecodeError,) as exc:
        return [f"mechanism_yaml: not a readable string ({exc})"], None
    recorded = str(h5.attrs["mechanism_sha256"])
    actual = mechanism_sha256(yaml_text)
    if recorded != actual:
        problems.append(f"mechanism_sha256: {recorded[:16]}… does not match the embedded "
                        f"mechanism_yaml (sha256 {actual[:16]}…)")
    phase = str(h5.attrs["phase_name"])
    try:
        gas = solution_from_yaml(yaml_text, phase)  # keyed by the text's own sha256
    except Exception as exc:  # noqa: BLE001 - Cantera raises several types for a bad text
        problems.append(f"mechanism_yaml: Cantera cannot load phase '{phase}' of it "
                        f"({cantera_message(exc)[:160]})")
        return problems, None
    if species is not None and species != list(gas.species_names):
        problems.append(f"species_names: {_first_difference(species, gas.species_names)}")
    return problems, gas


def _first_difference(listed: list[str], actual: list[str]) -> str:
    if len(listed) != len(actual):
        return (f"lists {len(listed)} species, the embedded mechanism has {len(actual)} "
                f"({', '.join(actual[:12])}{', …' if len(actual) > 12 else ''})")
    i = next(i for i, (a, b) in enumerate(zip(listed, actual)) if a != b)
    return (f"entry {i} is '{listed[i]}', species {i} of the embedded mechanism is "
            f"'{actual[i]}'")


def _shape_problems(h5: h5py.File, species: list[str] | None) -> tuple[list[str], int | None]:
    """Problems of the row datasets' shapes, types and columns; their common length."""
    problems: list[str] = []
    lengths = []
    for name in ("inputs", "targets"):
        ds = h5[name]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.dtype != np.float64:
            problems.append(f"{name}: must be an [N, 2+ns] float64 array, got "
                            f"{getattr(ds, 'shape', '?')} {getattr(ds, 'dtype', '')}")
            continue
        lengths.append(ds.shape[0])
        if species is not None and ds.shape[1] != 2 + len(species):
            problems.append(f"{name}: has {ds.shape[1]} columns, species_names gives "
                            f"{2 + len(species)} (T, P and {len(species)} species)")
        elif species is not None and "columns" in ds.attrs:
            try:
                columns = json.loads(ds.attrs["columns"])
            except (TypeError, ValueError):
                columns = None
            if columns != column_names(species):
                problems.append(f"{name}: its columns attribute is not T, P, species_names")
    src = h5["source"]
    if not isinstance(src, h5py.Dataset) or src.ndim != 1 or src.dtype != np.uint8:
        problems.append(f"source: must be an [N] uint8 array, got {getattr(src, 'shape', '?')} "
                        f"{getattr(src, 'dtype', '')}")
    else:
        lengths.append(src.shape[0])
    if len(set(lengths)) > 1:
        problems.append(f"inputs, targets, source: hold different numbers of rows "
                        f"({', '.join(map(str, lengths))}); they grow together")
    return problems, (min(lengths) if lengths else None)


def _task_problems(h5: h5py.File, n_stored: int | None, names: list[str] | None,
                   runs: list[dict] | None, complete: bool,
                   journal_rows: dict[str, int] | None) -> list[str]:
    """Problems of ``tasks/*`` against each other, the rows stored, the runs and the journal."""
    try:
        ids = h5["tasks/id"].asstr()[...].tolist()
        rows = h5["tasks/rows"][...]
        status = h5["tasks/status"].asstr()[...].tolist()
    except H5_ERRORS + (UnicodeDecodeError,) as exc:
        return [f"tasks: cannot be read ({str(exc).splitlines()[0][:120]})"]
    if not (len(ids) == len(rows) == len(status)):
        return [f"tasks: id, rows and status hold {len(ids)}, {len(rows)} and {len(status)} "
                "entries; one per task each"]
    problems: list[str] = []
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        return [f"tasks/rows: must be whole numbers, got {rows.dtype}"]
    negative = np.flatnonzero(rows < 0)
    if len(negative):
        problems.append(f"tasks/rows: task {ids[negative[0]]} records {rows[negative[0]]} rows "
                        f"(must be >= 0){_more(len(negative), 'task')}")
    total = int(rows[rows >= 0].sum())
    if n_stored is not None and total > n_stored:
        problems.append(f"tasks/rows: the tasks record {total} rows, the file holds {n_stored}")
    elif n_stored is not None and complete and total != n_stored:
        problems.append(f"tasks/rows: the tasks record {total} rows, the complete file holds "
                        f"{n_stored} (rows beyond the tasks are left only by an unfinished run)")
    seen: set[str] = set()
    for task_id, st in zip(ids, status):
        match = _TASK_ID.fullmatch(task_id)
        if match is None:
            problems.append(f"tasks/id: '{task_id}' is not r<run>/<source>/<number>")
        elif names is not None and match[2] not in names:
            problems.append(f"tasks/id: task {task_id} names a source outside source_names")
        elif runs is not None and int(match[1]) >= len(runs):
            problems.append(f"tasks/id: task {task_id} names run {match[1]}; runs records "
                            f"{len(runs)}")
        elif task_id in seen:
            problems.append(f"tasks/id: task {task_id} is recorded twice")
        if not (st == "ok" or st.startswith(("partial: ", "failed: "))):
            problems.append(f"tasks/status: task {task_id} has status '{st[:40]}' (ok, partial: "
                            "or failed: …)")
        seen.add(task_id)
        if len(problems) > 20:
            break
    for task_id, n in zip(ids, rows):
        want = (journal_rows or {}).get(task_id)
        if want is not None and want != n:
            problems.append(f"tasks/rows: task {task_id} records {n} rows, its journal part "
                            f"holds {want}")
    return problems


def _more(count: int, what: str) -> str:
    return f" (and {count - 1} more {what}(s))" if count > 1 else ""


def structure_problems(h5: h5py.File, path: str | Path,
                       journal_rows: dict[str, int] | None = None
                       ) -> tuple[list[str], tuple[float, float] | None]:
    """The cheap checks of an open dataset file: attributes, tasks, mechanism and shapes.

    ``journal_rows``: ``{task id: rows}`` of the run journal beside the file, when one is there.
    Returns ``(problems, thermo range (K) of the embedded mechanism or None)``; InputError when
    the file is not a deepkin dataset of this schema at all.
    """
    check_schema(h5, path)
    try:
        problems, parsed = _attribute_problems(h5)
        mech_problems, gas = _mechanism_problems(h5, parsed["species"])
        # The columns must be the mechanism's species (species_names is checked against it above)
        species = list(gas.species_names) if gas is not None else parsed["species"]
        shape_problems, n_stored = _shape_problems(h5, species)
        flag = h5.attrs["complete"]
        complete = isinstance(flag, (bool, np.bool_)) and bool(flag)
        task_problems = _task_problems(h5, n_stored, parsed["source_names"], parsed["runs"],
                                       complete, journal_rows)
    except H5_ERRORS as exc:
        return [f"file: its metadata cannot be read ({str(exc).splitlines()[0][:120]})"], None
    thermo_k = input_thermo_range_k(gas) if gas is not None else None
    return problems + mech_problems + shape_problems + task_problems, thermo_k


# -- the full scan ---------------------------------------------------------------------------------
@dataclass
class _Finding:
    """One kind of problem over the rows: the line of its first row (or block), and how many
    rows (or unreadable blocks) have it."""

    first: str
    unit: str
    count: int = 0

    def line(self) -> str:
        return self.first + (f" (and {self.count - 1} more {self.unit}(s))" if self.count > 1 else "")


class RowScan:
    """Checks blocks of rows; :meth:`problems` gives one line per kind of problem found.

    ``thermo_k``: the mechanism's thermo range (K), None to skip the T check.
    """

    def __init__(self, facts: DatasetFacts, thermo_k: tuple[float, float] | None,
                 task_codes: tuple[np.ndarray, np.ndarray] | None):
        self.facts = facts
        self.columns = column_names(facts.species)
        self.thermo_k = thermo_k
        self.task_codes = task_codes  # (row ends [T] of the tasks, their source codes [T])
        self.findings: dict[str, _Finding] = {}

    def _note(self, key: str, count: int, first: str, unit: str = "row") -> None:
        found = self.findings.setdefault(key, _Finding(first, unit))
        found.count += count

    def states(self, name: str, start: int, rows: np.ndarray) -> None:
        """Check state rows ``[k, 2+ns]`` of ``inputs`` or ``targets`` starting at row ``start``."""
        y = mass_fractions(rows)
        y_sum = y.sum(axis=1)  # NaN or inf in any Y makes the sum non-finite
        t, p = temperature(rows), pressure(rows)
        finite = np.isfinite(y_sum) & np.isfinite(t) & np.isfinite(p)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self._note(f"{name}/finite", len(bad),
                       non_finite_line(name, rows[bad[0]], start + int(bad[0]), self.columns))
        checks = [
            ("sum", np.abs(y_sum - 1.0) > SUM_Y_TOLERANCE,
             lambda i: f"ΣY = {y_sum[i]:.9g} (must be within {SUM_Y_TOLERANCE:g} of 1)"),
            ("negative", y.min(axis=1) < -NEGATIVE_Y_TOLERANCE,
             lambda i: f"Y of {self._most_negative(y[i])} (must be >= {-NEGATIVE_Y_TOLERANCE:g})"),
            ("pressure", (p < PRESSURE_RANGE_PA[0]) | (p > PRESSURE_RANGE_PA[1]),
             lambda i: f"P = {p[i]:.6g} Pa lies outside {PRESSURE_RANGE_PA[0]:g}–"
                       f"{PRESSURE_RANGE_PA[1]:g} Pa"),
        ]
        if name == "targets":  # Cantera extrapolates: a label may leave the thermo range
            checks.append(("temperature", t <= 0.0, lambda i: f"T = {t[i]:.6g} K (must be > 0)"))
        elif self.thermo_k is not None:
            lo, hi = self.thermo_k
            slack_lo, slack_hi = lo * (1 - THERMO_RANGE_SLACK), hi * (1 + THERMO_RANGE_SLACK)
            checks.append(("temperature", (t < slack_lo) | (t > slack_hi),
                           lambda i: f"T = {t[i]:.6g} K lies outside the mechanism's thermo "
                                     f"range {lo:g}–{hi:g} K"))
        for key, bad_mask, say in checks:
            bad = np.flatnonzero(bad_mask & finite)
            if len(bad):
                self._note(f"{name}/{key}", len(bad),
                           f"{name}: row {start + int(bad[0])}: {say(int(bad[0]))}")

    def _most_negative(self, y: np.ndarray) -> str:
        j = int(np.argmin(y))
        return f"{self.facts.species[j]} = {y[j]:.3g}"

    def sources(self, start: int, codes: np.ndarray) -> None:
        """Check source codes ``[k]`` of rows starting at ``start`` (range and their task's)."""
        n_names = len(self.facts.source_names)
        outside = np.flatnonzero(codes >= n_names)
        if len(outside):
            self._note("source/range", len(outside),
                       bad_source_line(start + int(outside[0]), int(codes[outside[0]]), n_names))
        if self.task_codes is None:
            return
        ends, task_code = self.task_codes
        task = np.searchsorted(ends, np.arange(start, start + len(codes)), side="right")
        wrong = np.flatnonzero((codes != task_code[task]) & (codes < n_names))
        if len(wrong):
            i = int(wrong[0])
            names = self.facts.source_names
            self._note("source/task", len(wrong),
                       f"source: row {start + i} has code {codes[i]} ({names[codes[i]]}), its task "
                       f"is of {names[task_code[task[i]]]}")

    def unreadable(self, name: str, start: int, stop: int, exc: BaseException) -> None:
        self._note(f"{name}/read", 1, unreadable_line(name, start, stop, exc), "block")

    def problems(self) -> list[str]:
        """One line per kind of problem found, in the order first met."""
        return [finding.line() for finding in self.findings.values()]


def _task_codes(h5: h5py.File, facts: DatasetFacts) -> tuple[np.ndarray, np.ndarray]:
    """``(row ends [T], source codes [T])`` of the recorded tasks (the cheap checks passed)."""
    rows = h5["tasks/rows"][...]
    ids = h5["tasks/id"].asstr()[...].tolist()
    codes = np.array([facts.source_names.index(i.split("/")[1]) for i in ids], dtype=np.int64)
    return np.cumsum(rows), codes


def scan_block_rows(h5: h5py.File) -> int:
    """Rows per block of the full scan: whole chunks, about :data:`SCAN_BLOCK_BYTES` per array."""
    ds = h5["inputs"]
    chunk = (ds.chunks or (1024,))[0]
    width = max(1, ds.shape[1])
    return max(1, SCAN_BLOCK_BYTES // (8 * width * chunk)) * chunk


def scan_rows(h5: h5py.File, facts: DatasetFacts, thermo_k: tuple[float, float] | None,
              tasks_sound: bool = True, block_rows: int | None = None) -> list[str]:
    """The full scan of every valid row of an open file, block by block; its problems."""
    scan = RowScan(facts, thermo_k, _task_codes(h5, facts) if tasks_sound else None)
    step = block_rows or scan_block_rows(h5)
    for start in range(0, facts.n_rows, step):
        stop = min(start + step, facts.n_rows)
        for name in ("inputs", "targets", "source"):
            try:
                rows = h5[name][start:stop]
            except H5_ERRORS as exc:
                scan.unreadable(name, start, stop, exc)
                continue
            if name == "source":
                scan.sources(start, rows)
            else:
                scan.states(name, start, rows)
    return scan.problems()


# -- entry points ----------------------------------------------------------------------------------
def check_dataset(path: str | Path, full: bool = False,
                  journal_rows: dict[str, int] | None = None,
                  block_rows: int | None = None) -> CheckReport:
    """Every problem of the dataset file at ``path``: the cheap checks, and with ``full`` the scan
    of every row. InputError (one line) when it is not a readable deepkin dataset at all."""
    with open_dataset_file(path) as h5:
        problems, thermo_k = structure_problems(h5, path, journal_rows)
        if problems and not full:
            return CheckReport(str(path), 0, full, problems)
        try:
            facts = read_facts(h5, path)
        except InputError as exc:
            return CheckReport(str(path), 0, full, problems or [str(exc)])
        if full:
            tasks_sound = not any(p.startswith(("tasks", "source_names")) for p in problems)
            problems = problems + scan_rows(h5, facts, thermo_k, tasks_sound, block_rows)
    return CheckReport(str(path), facts.n_rows, full, problems)


def verified_facts(path: str | Path) -> DatasetFacts:
    """The facts of a dataset file that passes the cheap checks; :class:`DatasetDamaged` (the
    first problem, as one line) otherwise."""
    with open_dataset_file(path) as h5:
        problems, _ = structure_problems(h5, path)
        if problems:
            raise DatasetDamaged(path, problems, full=False)
        return read_facts(h5, path)


def verify_rows(facts: DatasetFacts, block_rows: int | None = None) -> None:
    """The full scan of the file ``facts`` describes (cheap checks passed);
    :class:`DatasetDamaged` naming the first problem row otherwise."""
    with open_dataset_file(facts.path) as h5:
        _, gas = _mechanism_problems(h5, facts.species)
        thermo_k = input_thermo_range_k(gas) if gas is not None else None
        problems = scan_rows(h5, facts, thermo_k, True, block_rows)
    if problems:
        raise DatasetDamaged(facts.path, problems, full=True)
