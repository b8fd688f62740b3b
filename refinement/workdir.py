"""The work folder of a refinement run: its layout, the committed recipe, the stage markers and
the progress log.

Layout (``DIR``)::

    recipe.json              the committed recipe (config, every file it names, the model's sha256)
    progress.log             one line per stage started, skipped or finished
    replay.h5, replay.json   the replay dataset and its stage marker
    references/              ODE references, computed once (refinement/references.py)
    round-K/                 model.safetensors (round 0: the starting model), data.h5,
                             <network>.safetensors, evaluate/, states/, <stage>.json markers
    rounds.json, rounds.md, rounds.png, best.safetensors

A stage is done when its marker ``<stage>.json`` exists, names the committed recipe's digest and
the stamps of the stages it was computed from (``after``), and its outputs exist. Each finished
stage gets a fresh random stamp, so a stage computed again (its round folder was deleted)
invalidates every stage that used it. ``<stage>.started.json`` records what a stage started from:
a stage started from the same inputs resumes its partial work (a sampling journal, a training
checkpoint, finished cases); one whose inputs changed starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechanisms.atomic_io import atomic_write, atomic_write_text
from mechanisms.errors import InputError, StorageError

RECIPE_FILE = "recipe.json"
PROGRESS_LOG = "progress.log"


@dataclass
class StageRecord:
    """A finished stage: what it was computed from (``after``: stage id → stamp), its stamp, the
    outputs it wrote (paths relative to the work folder), its figures and its wall time (s)."""

    stage: str
    stamp: str
    recipe: str
    after: dict[str, str]
    outputs: list[str]
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""


class WorkDir:
    """The work folder ``root`` of one refinement run (see the module's docstring)."""

    def __init__(self, root: str | Path, log: Callable[[str], None] | None = None,
                 references: Path | None = None):
        self.root = Path(root).expanduser().resolve()
        self.echo = log or (lambda line: None)
        self.recipe_digest = ""
        self._references = Path(references).resolve() if references is not None else None

    # -- layout ---------------------------------------------------------------------------------
    def round_dir(self, k: int) -> Path:
        return self.root / f"round-{k}"

    def model(self, k: int) -> Path:
        """Round ``k``'s model (round 0: the starting model)."""
        return self.round_dir(k) / "model.safetensors"

    @property
    def replay(self) -> Path:
        return self.root / "replay.h5"

    @property
    def references(self) -> Path:
        """The ODE references' folder: ``DIR/references``, or a folder several work folders
        share (``references.folder``; each reference is keyed by everything it depends on)."""
        return self._references or self.root / "references"

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    # -- the committed recipe -------------------------------------------------------------------
    def commit(self, recipe: dict[str, Any]) -> None:
        """Create the folder and commit ``recipe``; InputError when the folder holds another
        recipe (the first key that differs is named)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"work: cannot create {self.root} ({exc.strerror or exc})")
        if not os.access(self.root, os.W_OK):
            raise InputError(f"work: {self.root} is not writable")
        text = json.dumps(recipe, indent=1, sort_keys=True)
        path = self.root / RECIPE_FILE
        if path.is_file():
            committed = json.loads(path.read_text())
            where = first_difference(committed, recipe)
            if where is not None:
                raise InputError(f"work: {self.root} holds a run of another recipe ({where} "
                                 f"differs from its {RECIPE_FILE}); use another --work, or delete "
                                 "that folder to start again")
            # the committed text names the run: a key a later deepkin added at its empty default
            # does not make the finished stages stale
            text = json.dumps(committed, indent=1, sort_keys=True)
        else:
            self._write_text(path, text)
        self.recipe_digest = hashlib.sha256(text.encode()).hexdigest()

    # -- markers --------------------------------------------------------------------------------
    def marker_path(self, stage_id: str) -> Path:
        """``replay`` → DIR/replay.json; ``r2/harvest`` → DIR/round-2/harvest.json."""
        if "/" not in stage_id:
            return self.root / f"{stage_id}.json"
        k, stage = stage_id.split("/", 1)
        return self.round_dir(int(k[1:])) / f"{stage}.json"

    def done(self, stage_id: str, after: dict[str, str]) -> StageRecord | None:
        """The stage's record when it is done from these inputs (see the module's docstring)."""
        record = _read_json(self.marker_path(stage_id))
        if record is None:
            return None
        try:
            record = StageRecord(**record)
        except TypeError:
            return None
        if record.recipe != self.recipe_digest or record.after != after:
            return None
        if not all((self.root / p).exists() for p in record.outputs):
            return None
        return record

    def run_stage(self, stage_id: str, after: dict[str, str],
                  work: Callable[[bool], tuple[list[Path], dict[str, Any]]]) -> StageRecord:
        """The stage's record: from its marker when done, else from ``work(fresh)``, which
        returns ``(outputs, figures)``. ``fresh`` is False when the stage resumes a start from
        the same inputs (its partial work may be kept), True when its partial work must go."""
        record = self.done(stage_id, after)
        if record is not None:
            self.log(f"{stage_id}: done already ({record.seconds:.1f} s, {record.finished})")
            return record
        marker = self.marker_path(stage_id)
        started_path = marker.with_name(marker.stem + ".started.json")
        started = _read_json(started_path)
        fresh = not (started and started.get("recipe") == self.recipe_digest
                     and started.get("after") == after)
        self.log(f"{stage_id}: {'started' if fresh else 'resumed'}")
        self._write_text(started_path, json.dumps({"recipe": self.recipe_digest, "after": after,
                                                   "started": _now()}))
        begin = time.perf_counter()
        outputs, figures = work(fresh)
        record = StageRecord(stage_id, uuid.uuid4().hex, self.recipe_digest, after,
                             [self.relative(p) for p in outputs], figures,
                             time.perf_counter() - begin, _now())
        self._write_text(marker, json.dumps(record.__dict__, indent=1))
        self.log(f"{stage_id}: finished in {record.seconds:.1f} s")
        return record

    def record(self, stage_id: str) -> StageRecord | None:
        """The stage's marker as it is (done or not), or None."""
        data = _read_json(self.marker_path(stage_id))
        try:
            return StageRecord(**data) if data else None
        except TypeError:
            return None

    # -- files ----------------------------------------------------------------------------------
    def log(self, line: str) -> None:
        """Append ``line`` with the time to progress.log and echo it."""
        stamped = f"{_now()} {line}"
        try:
            with open(self.root / PROGRESS_LOG, "a", encoding="utf-8") as fh:
                fh.write(stamped + "\n")
        except OSError as exc:
            raise StorageError(f"work: cannot write {self.root / PROGRESS_LOG} "
                               f"({exc.strerror or exc})") from None
        self.echo(line)

    def _write_text(self, path: Path, text: str) -> None:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise StorageError(f"work: cannot write {path} ({exc.strerror or exc})") from None

    def write_text(self, path: Path, text: str) -> None:
        """Write ``text`` to ``path`` atomically; StorageError naming it when the disk refuses."""
        self._write_text(path, text)

    def copy(self, src: Path, dst: Path) -> Path:
        """Copy ``src`` to ``dst`` atomically (a reader never sees half a copy)."""
        try:
            return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp), suffix=Path(dst).suffix)
        except OSError as exc:
            raise StorageError(f"work: cannot copy {src} to {dst} ({exc.strerror or exc})") from None


def _unset(value: Any) -> bool:
    return value is None or value == {} or value == []


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted path of the first place two JSON trees differ (None when equal). A key one side
    lacks equals the other side's empty value (None, {}, []): recipes written before a setting
    existed hold the same run as recipes that leave it unset."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                if _unset(a.get(key)) and _unset(b.get(key)):
                    continue
                return f"{where}{key}"
            found = first_difference(a[key], b[key], f"{where}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where.rstrip('.')}[{i}].")
            if found is not None:
                return found
        return None
    return None if a == b else (where.rstrip(".") or "recipe")


def file_digest(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
