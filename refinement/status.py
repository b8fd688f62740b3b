"""Where a refinement run stands (``deepkin refine-status``), read from its work folder only:
``recipe.json``, ``run.lock`` (probed, never taken for long), ``progress.log``, the stage
markers and the files a running stage has written so far. Nothing is written and nothing heavy
is imported (no torch), so it answers in a fraction of a second while the run goes on.

- :func:`read_status`: a :class:`WorkStatus` (``as_dict`` for ``--json``);
- :func:`format_status`: a few lines of plain text;
- :func:`work_folders`: the work folders under a folder (the default ``refine`` cache).

The estimate of when the current round ends sums the previous round's stage times (``seconds``
in its markers: a resumed stage's counts its earlier runs up to the last line each wrote) over
the stages still to run, less the time the running stage has already taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinement.config import NETWORKS, FlameCase, Targets
from refinement.workdir import (
    LOG_TIME_FORMAT,
    PROGRESS_LOG,
    RECIPE_FILE,
    RUN_HEADER,
    LockHolder,
    StageRecord,
    WorkDir,
    log_time,
)

# kinetics.training.train.TrainConfig.epochs, for a training config that sets none (read here
# without importing torch; tests/test_refine.py checks the two agree)
TRAIN_EPOCHS_DEFAULT = 50
SETS = ("harvest", "validation")
# A folder without run.lock (a run of a deepkin older than the lock) whose progress.log has not
# been written for this long is taken as stopped, not running (a live run writes at every stage
# and case; its longest silence, a 0D part, is under an hour on 2 cores).
STALE_AFTER_S = 3 * 3600.0

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")
_EVENT = re.compile(r"^(replay|r\d+/[a-z-]+): (started|resumed|finished in|done already)\b")
_REFERENCES_TO_COMPUTE = re.compile(r"^references: \d+ ODE flame\(s\) to compute")


@dataclass
class LogState:
    """What progress.log says: the stage the last run started and has not finished (``open``:
    stage id, start time, whether it resumed), the last line written since it started
    (``detail``: time, text), the last run's start time and rounds, and the line it ended with
    (``ended``: ``best: round ...``; None while it runs or when it was stopped)."""

    open: tuple[str, str, bool] | None = None
    detail: tuple[str, str] | None = None
    run_started: str | None = None
    rounds: int | None = None
    ended: tuple[str, str] | None = None
    last_written: str | None = None


@dataclass
class RoundStatus:
    """An evaluated round: when its evaluate stage finished, its stage times (s), the
    worst errors of each case set (``refinement.report.set_summary``), each validation
    flame's speed error (relative; None for a failed run) and, when the run's targets are
    known, its harvest score, the figure that sets it and whether the validation targets hold."""

    round: int
    finished: str
    seconds: dict[str, float]
    summary: dict[str, dict[str, Any]]
    flame_speed_rel: dict[str, float | None]
    score: float | None = None
    worst: str | None = None
    targets_met: bool | None = None


@dataclass
class StageProgress:
    """The stage a run is in (or was in when it stopped): since when (local time), for how
    long (s), whether it resumed, its progress counted from the files on disk (evaluate:
    ``flames_done``/``flames``, ``zero_d_parts_done``/``zero_d_parts``; training:
    ``epochs_done``/``epochs``, ``best_val_loss``) and the last line logged since it started."""

    stage: str
    since: str
    elapsed_s: float
    resumed: bool
    progress: dict[str, Any] = field(default_factory=dict)
    last_line: str | None = None
    last_line_at: str | None = None


@dataclass
class Estimate:
    """When round ``round`` should end (local time), ``remaining_s`` from now, from round
    ``from_round``'s stage times; ``left_out``: stages still to run that round did not run;
    ``with_references``: stages still to run whose counterpart in that round also computed the
    flames' ODE references (hours, once per work folder: not a round's time)."""

    round: int
    end: str
    remaining_s: float
    from_round: int
    left_out: list[str]
    with_references: list[str] = field(default_factory=list)


@dataclass
class WorkStatus:
    """A work folder's state. ``running``: True while a run holds ``run.lock``, False when
    none does, None when it cannot be told (no ``run.lock``: a run of a deepkin older than the
    lock may be going on). ``rounds_planned``: the last run's ``rounds``; ``current``: the stage
    the last run started and did not finish (running, or where it stopped); ``ended``: the
    time and line the last run ended with (``best: round ...``); ``log_written``: progress.log's
    last time."""

    work_dir: str
    name: str
    running: bool | None
    lock: LockHolder
    rounds_planned: int | None
    rounds: list[RoundStatus]
    current: StageProgress | None
    estimate: Estimate | None
    ended: str | None
    log_written: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers as None)."""
        from refinement.report import finite

        return finite(dataclasses.asdict(self))


def read_status(root: str | Path, now: float | None = None) -> WorkStatus:
    """The status of the work folder ``root`` at ``now`` (s since the epoch; default the
    clock); InputError when ``root`` is not a work folder."""
    now = time.time() if now is None else now
    work = WorkDir(root)
    recipe = work.load()
    lock = work.holder()
    log = read_log(work.root / PROGRESS_LOG)
    running = {"held": True, "free": False}.get(lock.state)
    if running is None and log.ended is not None:
        running = False  # the last run logged its end and no later run started
    if running is None and log.last_written is not None \
            and now - log_time(log.last_written) > STALE_AFTER_S:
        running = False  # no lock to ask, and nothing written for hours: not a live run
    targets = _targets(work.root, lock)
    rounds = [_round(work, k, targets) for k in _evaluated_rounds(work)]
    current = _stage_progress(work, recipe, log, now) if log.open is not None else None
    estimate = _estimate(work, recipe, current, now) if current and running is not False else None
    return WorkStatus(str(work.root), recipe.get("name", work.root.name), running, lock,
                      lock.about.get("rounds") or log.rounds, rounds, current, estimate,
                      None if log.ended is None else f"{log.ended[0]} {log.ended[1]}",
                      log.last_written)


def work_folders(folder: Path) -> list[Path]:
    """The work folders (holding ``recipe.json``) directly under ``folder``, by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / RECIPE_FILE).is_file())


# -- progress.log -----------------------------------------------------------------------------
def read_log(path: Path) -> LogState:
    """progress.log's state (empty when the file is missing)."""
    state = LogState()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return state
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        when, line = match.groups()
        state.last_written = when
        header = RUN_HEADER.match(line)
        event = _EVENT.match(line)
        if header:  # a new run: whatever the last one left open, it abandoned
            state = LogState(run_started=when, rounds=int(header.group(1)), last_written=when)
        elif line.startswith("best: round"):
            state.ended, state.open, state.detail = (when, line), None, None
        elif event:
            stage, what = event.groups()
            if what in ("started", "resumed"):
                state.open, state.detail = (stage, when, what == "resumed"), None
            elif state.open and state.open[0] == stage and what == "finished in":
                state.open, state.detail = None, None
        elif state.open is not None:
            state.detail = (when, line)
    return state


# -- rounds -----------------------------------------------------------------------------------
def _evaluated_rounds(work: WorkDir) -> list[int]:
    """The rounds whose evaluate stage finished under the committed recipe, in order."""
    found = []
    for folder in work.root.glob("round-*"):
        k = folder.name[len("round-"):]
        if k.isdigit() and _done(work, f"r{k}/evaluate"):
            found.append(int(k))
    return sorted(found)


def _done(work: WorkDir, stage_id: str) -> StageRecord | None:
    """The stage's marker when it finished under the committed recipe."""
    record = work.record(stage_id)
    return record if record is not None and record.recipe == work.recipe_digest else None


def _round(work: WorkDir, k: int, targets: Targets | None) -> RoundStatus:
    from refinement.report import set_summary

    evaluate = _done(work, f"r{k}/evaluate")
    figures = evaluate.figures
    seconds = {}
    for path in sorted(work.round_dir(k).glob("*.json")):
        record = None if path.name.endswith(".started.json") else _done(work, f"r{k}/{path.stem}")
        if record is not None:
            seconds[path.stem] = round(record.seconds, 1)
    speeds = {f["case"]: None if "failed" in f else f.get("speed_rel")
              for f in figures.get("validation", {}).get("flames", [])}
    out = RoundStatus(k, evaluate.finished, seconds,
                      {name: set_summary(figures.get(name, {})) for name in SETS}, speeds)
    if targets is not None and all(name in figures for name in SETS):
        from refinement.loop import judge

        out.score, out.worst, out.targets_met = judge(figures, targets)
    return out


def _targets(root: Path, lock: LockHolder) -> Targets | None:
    """The targets of the folder's last run: from ``run.lock`` (written by every run since the
    lock), else from ``rounds.json`` (written when a run ends); None when neither has them."""
    held = lock.about.get("targets")
    if not isinstance(held, dict):
        try:
            held = json.loads((root / "rounds.json").read_text()).get("targets")
        except (OSError, ValueError, AttributeError):
            held = None
    if not isinstance(held, dict):
        return None
    known = {f.name for f in dataclasses.fields(Targets)}
    return Targets(**{k: v for k, v in held.items() if k in known})


# -- the running stage ------------------------------------------------------------------------
def _stage_progress(work: WorkDir, recipe: dict[str, Any], log: LogState,
                    now: float) -> StageProgress:
    stage, since, resumed = log.open
    current = StageProgress(stage, since, max(now - log_time(since), 0.0), resumed)
    if log.detail is not None:
        current.last_line_at, current.last_line = log.detail
    kind = stage.split("/", 1)[-1]
    k = _round_of(stage)
    if kind == "evaluate":
        current.progress = _evaluate_progress(work, recipe, k)
    elif kind.startswith("train-"):
        current.progress = _train_progress(work, recipe, k, kind[len("train-"):])
    return current


def _round_of(stage: str) -> int:
    """The round a stage belongs to (the replay dataset is made for round 1)."""
    return 1 if stage == "replay" else int(stage.split("/", 1)[0][1:])


def _evaluate_progress(work: WorkDir, recipe: dict[str, Any], k: int) -> dict[str, Any]:
    """The flames with a result out of the recipe's, and the 0D grid parts (one per T0 and P)
    with a result out of the grids'; the layout of ``refinement.stages.evaluate`` and
    ``refinement.cases.run_zero_d``. Before those, while the flames' ODE references in
    ``DIR/references`` are not all computed (the first evaluate: hours of CPU), how many are,
    and how far each one begun has got (:func:`_reference_progress`)."""
    from refinement.cases import RESULT_FILE, zero_d_part_name

    folder = work.round_dir(k) / "evaluate"
    known = {f.name for f in dataclasses.fields(FlameCase)}
    flames = [(which, FlameCase(**{k: v for k, v in case.items() if k in known}))
              for which in SETS for case in (recipe.get(which) or {}).get("flames") or []]
    out: dict[str, Any] = _reference_progress(work.root / "references", [c for _, c in flames])
    if flames:
        out["flames"] = len(flames)
        out["flames_done"] = sum((folder / which / case.label / RESULT_FILE).is_file()
                                 for which, case in flames)
    parts = done = 0
    for which in SETS:
        grid = (recipe.get(which) or {}).get("zero_d")
        if not grid:
            continue
        grid_dir = folder / f"{which}-zero-d"
        names = [zero_d_part_name(t, p) for t in grid["temperature_k"]
                 for p in grid["pressure_atm"]]
        parts += len(names)
        whole = (grid_dir / RESULT_FILE).is_file()
        done += sum(whole or (grid_dir / name / RESULT_FILE).is_file() for name in names)
    if parts:
        out["zero_d_parts"], out["zero_d_parts_done"] = parts, done
    return out


def _reference_progress(root: Path, cases: list[FlameCase]) -> dict[str, Any]:
    """``{references, references_done, references_running}`` for the flame ``cases`` whose ODE
    reference folders (``root/openfoam/<case label>-<key>``: :mod:`refinement.references`) hold
    a ``result.json``, and, for those begun but not done, the last time written out of the
    case's end time (s); ``{}`` when every reference is computed or none has a folder yet under
    ``root`` (a ``references.folder`` elsewhere is not looked at). The key is not recomputed
    (that needs the model): a folder of the case's label with any key counts."""
    from couplers.openfoam.foam import time_directories
    from refinement.cases import RESULT_FILE

    base = root / "openfoam"
    if not cases or not base.is_dir():
        return {}
    listed = [d for d in base.iterdir() if d.is_dir()]
    done, running = 0, []
    for case in cases:
        pattern = re.compile(rf"^{re.escape(case.label)}-[0-9a-f]{{16}}$")
        folders = [d for d in listed if pattern.match(d.name)]
        if any((d / RESULT_FILE).is_file() for d in folders):
            done += 1
            continue
        times = [t for d in folders for t, _ in time_directories(d) if t > 0]
        if times:
            running.append({"case": case.label, "time_s": max(times),
                            "end_time_s": case.end_time_s})
    if done == len(cases):
        return {}
    return {"references": len(cases), "references_done": done, "references_running": running}


def _train_progress(work: WorkDir, recipe: dict[str, Any], k: int,
                    network: str) -> dict[str, Any]:
    """Epochs in the network's CSV log so far (its ``epoch`` column counts a resumed run's
    epochs too) out of the epochs its config and the overrides set, and the best validation
    loss so far; the file names of ``refinement.stages.network_outputs``."""
    import yaml

    train = recipe.get("train") or {}
    networks = [n for n in NETWORKS if train.get(n)]
    if network not in networks:
        return {}
    stem = "model" if network == networks[-1] else network
    out: dict[str, Any] = {}
    try:
        config = yaml.safe_load(train[network].get("text") or "") or {}
    except yaml.YAMLError:
        config = {}
    epochs = {**(config if isinstance(config, dict) else {}), **(train.get("overrides") or {}),
              **((train.get("network_overrides") or {}).get(network) or {})}.get(
                  "epochs", TRAIN_EPOCHS_DEFAULT)
    out["epochs"] = epochs
    out["epochs_done"] = 0
    try:
        rows = (work.round_dir(k) / f"{stem}.log.csv").read_text().splitlines()[1:]
    except OSError:
        return out
    losses = []
    for row in rows:
        cells = row.split(",")
        if len(cells) >= 3 and cells[0].strip().isdigit():
            out["epochs_done"] = int(cells[0])
            try:
                losses.append(float(cells[2]))
            except ValueError:
                pass
    if losses:
        out["best_val_loss"] = min(losses)
    return out


# -- the estimate -----------------------------------------------------------------------------
def _round_stages(recipe: dict[str, Any], k: int) -> list[str]:
    """The stages of round ``k`` in the order the loop runs them."""
    if k == 0:
        return ["r0/evaluate"]
    train = recipe.get("train") or {}
    return [*(["replay"] if k == 1 else []), f"r{k}/harvest",
            *(f"r{k}/train-{n}" for n in NETWORKS if train.get(n)), f"r{k}/evaluate"]


def _estimate(work: WorkDir, recipe: dict[str, Any], current: StageProgress,
              now: float) -> Estimate | None:
    """When the running stage's round should end, from the round before's stage times; None
    for round 0 or when that round ran none of the stages still to run."""
    k = _round_of(current.stage)
    stages = _round_stages(recipe, k)
    if k == 0 or current.stage not in stages:
        return None
    remaining, left_out, with_references, known = 0.0, [], [], 0
    computed_references = _stages_computing_references(work.root / PROGRESS_LOG)
    for stage in stages[stages.index(current.stage):]:
        counterpart = None if stage == "replay" else f"r{k - 1}/{stage.split('/', 1)[1]}"
        before = None if counterpart is None else _done(work, counterpart)
        if before is None:
            left_out.append(stage)
            continue
        if counterpart in computed_references:
            with_references.append(stage)
            continue
        known += 1
        remaining += max(before.seconds - current.elapsed_s, 0.0) \
            if stage == current.stage else before.seconds
    if not known:
        return None
    return Estimate(k, time.strftime(LOG_TIME_FORMAT, time.localtime(now + remaining)), remaining,
                    k - 1, left_out, with_references)


def _stages_computing_references(path: Path) -> set[str]:
    """The stages during which progress.log says ODE references were computed (a
    ``references: N ODE flame(s) to compute`` line while the stage was open)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    found: set[str] = set()
    open_stage = None
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        line = match.group(2)
        event = _EVENT.match(line)
        if RUN_HEADER.match(line):
            open_stage = None
        elif event:
            stage, what = event.groups()
            open_stage = stage if what in ("started", "resumed") else None
        elif open_stage and _REFERENCES_TO_COMPUTE.match(line):
            found.add(open_stage)
    return found


# -- text -------------------------------------------------------------------------------------
def format_status(status: WorkStatus) -> str:
    """A few lines of plain text (see docs/training.md)."""
    planned = f", up to {status.rounds_planned} round(s)" if status.rounds_planned else ""
    lines = [f"work     {status.work_dir} ({status.name}{planned})", f"run      {_run_line(status)}"]
    for r in status.rounds:
        lines.append(f"round {r.round:<3}{_round_line(r)}")
    if not status.rounds:
        lines.append("rounds   none evaluated yet")
    c = status.current
    if c is not None:
        label = "now" if status.running is not False else "stopped"
        what = "resumed" if c.resumed else "started"
        lines.append(f"{label:<9}{c.stage} ({what} {c.since}, {_duration(c.elapsed_s)} ago)"
                     + (f": {_progress_text(c.progress)}" if c.progress else ""))
        if c.last_line:
            lines.append(f"         last logged {c.last_line_at[11:]}: {c.last_line}")
    elif status.running:
        lines.append("now      between stages (checking finished stages or writing the report)")
    e = status.estimate
    if e is not None:
        left = f"; not counting {', '.join(e.left_out)} (round {e.from_round} ran none)" \
            if e.left_out else ""
        if e.with_references:
            left += (f"; not counting {', '.join(e.with_references)} (round {e.from_round}'s "
                     "also computed the ODE references)")
        lines.append(f"estimate round {e.round} ends around {e.end} (in {_duration(e.remaining_s)}; "
                     f"an estimate from round {e.from_round}'s stage times{left})")
    return "\n".join(lines)


def _run_line(status: WorkStatus) -> str:
    lock = status.lock
    if status.running:
        gone = " (that pid is gone: a process it started still holds the lock)" \
            if lock.alive is False else ""
        return f"running ({lock.describe()}){gone}"
    if status.running is None:
        written = f"; progress.log last written {status.log_written}" if status.log_written else ""
        return ("unknown: no run.lock (a run started by a deepkin older than the lock cannot be "
                f"probed){written}")
    if status.current is not None:
        why = (f" (no run.lock to ask; progress.log unwritten since {status.log_written})"
               if lock.state in ("absent", "unknown") else "")
        return (f"not running{why}: stopped before its stage finished (killed or failed); the "
                "same deepkin refine command resumes it")
    if status.ended:
        return f"not running; the last run ended {status.ended[:19]}: {status.ended[20:]}"
    return "not running"


def _round_line(r: RoundStatus) -> str:
    v = r.summary["validation"]
    parts = []
    if r.flame_speed_rel:
        names = _short_names(list(r.flame_speed_rel))
        parts.append("validation flame speed " + ", ".join(
            f"{names[case]} {_pct(rel, '+.2f')}" if rel is not None else f"{names[case]} failed"
            for case, rel in r.flame_speed_rel.items()))
    if v.get("peak_error_k") is not None:
        parts.append(f"peak T {v['peak_error_k']:+.1f} K")
    if v.get("idt_max_rel") is not None:
        parts.append(f"0D IDT max {_pct(v['idt_max_rel'], '.1f')} / mean "
                     f"{_pct(v.get('idt_mean_rel'), '.2f')}")
    if v.get("end_t_error_k") is not None:
        parts.append(f"end T {v['end_t_error_k']:+.1f} K")
    species = v.get("after_ignition_max_rel") or {}
    if species:
        parts.append("after ignition " + " / ".join(f"{s} {_pct(x, '.1f')}"
                                                     for s, x in species.items()))
    if r.score is not None:
        met = {True: "; targets met", False: "; targets missed", None: ""}[r.targets_met]
        parts.append(f"harvest score {_num(r.score)} ({r.worst}){met}")
    figures = "; ".join(parts) or "no validation figure"
    return f"(evaluated {r.finished}) {figures}"


def _short_names(cases: list[str]) -> dict[str, str]:
    """Case labels without the ``-``-separated parts they all share (``phi0.7``, ``phi1``);
    a lone case keeps its label."""
    split = [case.split("-") for case in cases]
    if len(cases) < 2 or len({len(s) for s in split}) != 1:
        return {case: case for case in cases}
    varies = [i for i in range(len(split[0])) if len({s[i] for s in split}) > 1]
    return {case: "-".join(s[i] for i in varies) for case, s in zip(cases, split)}


def _progress_text(progress: dict[str, Any]) -> str:
    parts = []
    if "references" in progress:
        begun = ", ".join(f"{r['case']} {_num(1e3 * r['time_s'])}/{_num(1e3 * r['end_time_s'])} ms"
                          for r in progress["references_running"])
        parts.append(f"ODE references {progress['references_done']}/{progress['references']} "
                     f"computed" + (f" ({begun})" if begun else ""))
    if "flames" in progress:
        parts.append(f"flames {progress['flames_done']}/{progress['flames']} done")
    if "zero_d_parts" in progress:
        parts.append(f"0D parts {progress['zero_d_parts_done']}/{progress['zero_d_parts']} done")
    if "epochs" in progress:
        loss = f" (best val. loss {progress['best_val_loss']:.4g})" \
            if "best_val_loss" in progress else ""
        parts.append(f"epoch {progress['epochs_done']}/{progress['epochs']}{loss}")
    return ", ".join(parts)


def _pct(value: float | None, spec: str) -> str:
    return "—" if value is None else f"{100 * value:{spec}} %"


def _num(value: float) -> str:
    return "inf" if not math.isfinite(value) else f"{value:.3g}"


def _duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3 h 05 min``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


