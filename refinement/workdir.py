"""The work folder of a refinement run: its layout, the committed recipe, the stage markers and
the progress log.

Layout (``DIR``)::

    recipe.json              the committed recipe (config, every file it names, the model's sha256)
    run.lock                 locked (flock) by the run that uses the folder, holding its pid, host
                             and start time (JSON); left behind when the run ends or is killed
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

One run at a time uses a folder: :meth:`WorkDir.hold` takes an exclusive ``flock`` on
``run.lock`` for the run's lifetime. The kernel releases it when the process ends, however it
ends (SIGKILL included), so the file a killed run leaves behind blocks nothing;
:meth:`WorkDir.holder` probes it without taking it (``deepkin refine-status``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechanisms.atomic_io import atomic_write, atomic_write_text
from mechanisms.errors import InputError, StorageError

RECIPE_FILE = "recipe.json"
PROGRESS_LOG = "progress.log"
RUN_LOCK = "run.lock"
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # progress.log's and the markers' local times
# the first line a run writes to progress.log (refinement.loop), with its rounds
RUN_HEADER = re.compile(r"^refine .*: up to (\d+) round\(s\) in ")
LOCK_PATIENCE_S = 1.0  # how long hold() retries a held lock (a status probe holds it for µs)


@dataclass
class LockHolder:
    """What ``run.lock`` says about the folder's run: ``state`` is ``held`` (a run holds the
    lock now), ``free`` (the file is there, no process holds it: the last run ended or was
    killed), ``absent`` (no run of a deepkin that takes the lock used the folder) or
    ``unknown`` (the file cannot be read or the file system has no locks); ``pid``,
    ``host`` and ``started`` (local time) are the last holder's, from the file; ``alive``:
    whether that pid still exists (same host only; None when unknown); ``about``: the rest of
    the file (the run's rounds and targets)."""

    state: str
    pid: int | None = None
    host: str | None = None
    started: str | None = None
    alive: bool | None = None
    about: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``pid 1234, started 2026-12-06 21:38:46`` (the host named when it is another)."""
        where = f" on host {self.host}" if self.host and self.host != socket.gethostname() else ""
        pid = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        return f"{pid}{where}, started {self.started or 'at an unknown time'}"


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
    def create(self) -> None:
        """Create the folder; InputError when it cannot be created or written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"work: cannot create {self.root} ({exc.strerror or exc})")
        if not os.access(self.root, os.W_OK):
            raise InputError(f"work: {self.root} is not writable")

    def commit(self, recipe: dict[str, Any]) -> None:
        """Create the folder and commit ``recipe``; InputError when the folder holds another
        recipe (the first key that differs is named)."""
        self.create()
        text = json.dumps(recipe, indent=1, sort_keys=True)
        path = self.root / RECIPE_FILE
        if path.is_file():
            committed = json.loads(path.read_text())
            where = first_difference(committed, recipe)
            if where is not None:
                start = self.root / "round-0" / "model.safetensors"
                hint = (f"; to go on with its own starting model (a shipped model since replaced), "
                        f"pass {start} as MODEL" if where == "model_sha256" and start.is_file()
                        else "")
                raise InputError(f"work: {self.root} holds a run of another recipe ({where} "
                                 f"differs from its {RECIPE_FILE}); use another --work, or delete "
                                 f"that folder to start again{hint}")
            # the committed text names the run: a key a later deepkin added at its empty default
            # does not make the finished stages stale
            text = json.dumps(committed, indent=1, sort_keys=True)
        else:
            self._write_text(path, text)
        self.recipe_digest = _digest(text)

    def load(self) -> dict[str, Any]:
        """The committed recipe, read without writing anything (its digest set as
        :meth:`commit` sets it); InputError when the folder holds none."""
        path = self.root / RECIPE_FILE
        if not self.root.is_dir() or not path.is_file():
            raise InputError(f"work: {self.root} is not a refine work folder (no {RECIPE_FILE})")
        committed = _read_json(path)
        if not isinstance(committed, dict):
            raise InputError(f"work: {path} is not a recipe (not a JSON mapping)")
        self.recipe_digest = _digest(json.dumps(committed, indent=1, sort_keys=True))
        return committed

    # -- the run's lock -------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self, about: dict[str, Any] | None = None) -> Iterator[None]:
        """Hold ``run.lock`` (exclusive ``flock``) while the block runs, the file holding this
        process's pid, host and start time and ``about`` (what a status reader should know of
        the run that the recipe leaves out: its rounds and targets); InputError naming the
        holder when another process holds it (after retrying for ``LOCK_PATIENCE_S`` s: a
        status probe holds it for microseconds). On a file system without locks the run goes
        on unlocked, with a note in progress.log. The file is never removed: removing it would
        let two runs lock two different files."""
        self.create()
        path = self.root / RUN_LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"work: cannot open {path} ({exc.strerror or exc})") from None
        try:
            if not self._lock(fd, path):
                self.log(f"note: work: {self.root}'s file system has no locks; a second run on "
                         "this folder would not be refused")
            facts = {**(about or {}), "pid": os.getpid(), "host": socket.gethostname(),
                     "started": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(facts).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lock(self, fd: int, path: Path) -> bool:
        """Take the exclusive lock on ``fd`` (the caller closes it): True once held, False on a
        file system without locks; InputError naming the holder when another process keeps
        it."""
        deadline = time.monotonic() + LOCK_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _holder_facts(path, "held")
                raise InputError(f"work: {self.root} is in use by a running deepkin refine "
                                 f"({holder.describe()}); wait for it to finish or stop it") \
                    from None
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return False
                raise InputError(f"work: cannot lock {path} ({exc.strerror or exc})") from None

    def holder(self) -> LockHolder:
        """Who holds ``run.lock`` now, probed without waiting and without creating the file
        (a shared lock taken and dropped at once; :meth:`hold` retries past it)."""
        path = self.root / RUN_LOCK
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return LockHolder("absent")
        except OSError:
            return _holder_facts(path, "unknown")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            state = "free"
        except BlockingIOError:
            state = "held"
        except OSError:
            state = "unknown"  # a file system without locks: nothing to probe
        finally:
            os.close(fd)
        return _holder_facts(path, state)

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
        # a resumed stage's time counts its earlier runs' too (from progress.log)
        spent_before = 0.0 if fresh else self.logged_seconds(stage_id)
        self.log(f"{stage_id}: {'started' if fresh else 'resumed'}")
        self._write_text(started_path, json.dumps({"recipe": self.recipe_digest, "after": after,
                                                   "started": _now()}))
        begin = time.perf_counter()
        outputs, figures = work(fresh)
        record = StageRecord(stage_id, uuid.uuid4().hex, self.recipe_digest, after,
                             [self.relative(p) for p in outputs], figures,
                             spent_before + time.perf_counter() - begin, _now())
        self._write_text(marker, json.dumps(record.__dict__, indent=1))
        self.log(f"{stage_id}: finished in {record.seconds:.1f} s")
        return record

    def logged_seconds(self, stage_id: str) -> float:
        """The wall time (s) ``stage_id`` has run so far by progress.log, over every run that
        started or resumed it without finishing: each from its ``started``/``resumed`` line to
        the last line that run wrote (a run ends where the next run's first line, ``refine …
        up to N round(s) in …``, begins; the time after a run's last line until it was killed
        is not known and not counted)."""
        try:
            lines = (self.root / PROGRESS_LOG).read_text(encoding="utf-8").splitlines()
        except OSError:
            return 0.0
        total, start, last = 0.0, None, None
        for line in lines:
            when = log_time(line[:19])
            if when is None:
                continue
            text = line[20:]
            if start is not None and last is not None and RUN_HEADER.match(text):
                total += last - start  # the run that had the stage open ended here
                start = None
            if text.startswith((f"{stage_id}: started", f"{stage_id}: resumed")):
                start = when
            elif start is not None and text.startswith(f"{stage_id}: finished"):
                total += when - start
                start = None
            last = when
        if start is not None and last is not None:
            total += last - start  # the last run left it open (it was killed)
        return total

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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _holder_facts(path: Path, state: str) -> LockHolder:
    """``state`` with the pid, host and start time ``path`` records (None where unreadable)
    and, for a holder on this host, whether its pid still exists."""
    facts = _read_json(path)
    facts = facts if isinstance(facts, dict) else {}
    pid = facts.get("pid") if isinstance(facts.get("pid"), int) else None
    host = facts.get("host") if isinstance(facts.get("host"), str) else None
    alive = None
    if pid is not None and host == socket.gethostname():
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    started = facts.get("started") if isinstance(facts.get("started"), str) else None
    about = {k: v for k, v in facts.items() if k not in ("pid", "host", "started")}
    return LockHolder(state, pid, host, started, alive, about)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_time(stamp: str) -> float | None:
    """A progress.log time (:data:`LOG_TIME_FORMAT`, local) as seconds since the epoch, or None
    for text that is not one."""
    try:
        return time.mktime(time.strptime(stamp, LOG_TIME_FORMAT))
    except ValueError:
        return None


def _now() -> str:
    return time.strftime(LOG_TIME_FORMAT)
