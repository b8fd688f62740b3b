"""The evaluation core shared by every reduction method: score species masks against the detailed
mechanism.

A candidate is a boolean species mask ``[ns]`` (True = kept). :class:`Evaluator` sends candidates
to the executor (the mechanism travels once as YAML text + sha256; each worker keeps one detailed
``ct.Solution`` and builds reduced ones in memory), and judges the returned per-condition values
against the bounds (``constraints.py``). A reduced model that fails, does not ignite, burn or go
out at a condition scores 100 % there and the run goes on.

Candidates are judged cheapest target first: the ignition delays and every condition's
equilibrium temperature, then — only for candidates within those bounds — the
flames and stirred reactors, which cost 10–100 × more. A candidate that already fails is not run
further (its costly conditions are ``"skipped"``); it fails either way. The independent re-run of a
written answer runs everything, with the written mechanism itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.errors import cantera_message
from mechanisms.loading import load_mechanism, solution_from_yaml
from mechanisms.reduction.config import IGNITION, Condition, ReductionConfig, SimulationSettings
from mechanisms.reduction.constraints import judge
from mechanisms.reduction.targets import (
    ConditionResult,
    ReferenceTargets,
    SharedContext,
    equilibrium_temperature,
    run_condition,
)
from mechanisms.reduction.writer import builder_for

_LAST_MODELS: dict[tuple[str, bytes], ct.Solution] = {}


def pack_mask(mask: np.ndarray) -> bytes:
    """A boolean mask ``[ns]`` as compact bytes (hashable, cheap to send)."""
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(packed: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`pack_mask` for a mask of length ``n``."""
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[:n].astype(bool)


def _model(ctx: SharedContext, packed: bytes) -> tuple[ct.Solution | None, str | None]:
    """The reduced ``ct.Solution`` of ``packed`` (or the written file's, for a verification), or
    None and the reason when Cantera cannot build it."""
    if ctx.get("direct"):
        # verification: the mechanism exactly as Cantera loads it from the written file
        return solution_from_yaml(ctx["yaml_text"], ctx["phase"], ctx["sha256"]), None
    gas = _LAST_MODELS.get((ctx["sha256"], packed))
    if gas is None:
        builder = builder_for(ctx["yaml_text"], ctx["phase"], ctx["sha256"])
        try:
            gas = builder.solution(unpack_mask(packed, builder.n_species), transport=ctx["transport"])
        except ct.CanteraError as exc:
            return None, cantera_message(exc)
        _LAST_MODELS.clear()  # keep one: tasks of a candidate split over conditions reuse it
        _LAST_MODELS[(ctx["sha256"], packed)] = gas
    return gas, None


def candidate_task(ctx: SharedContext, packed: bytes, run: tuple[int, ...],
                   eq_only: tuple[int, ...]) -> dict[str, Any]:
    """Worker task: run conditions ``run`` with the reduced model ``packed`` and compute the
    equilibrium temperature of ``run`` and ``eq_only``; never raises for a Cantera failure. Returns
    plain data: values, statuses, equilibrium temperatures, seconds."""
    started = time.perf_counter()
    settings = SimulationSettings(**ctx["settings"])
    gas, error = _model(ctx, packed)
    results: dict[int, ConditionResult] = {}
    for i in (*run, *eq_only):
        cond = Condition.from_dict(ctx["conditions"][i])
        if gas is None:
            results[i] = ConditionResult(None, "failed", f"cannot build the model: {error}")
        elif i in eq_only:
            results[i] = ConditionResult(None, "skipped", t_eq_k=_equilibrium(gas, cond))
        else:
            results[i] = run_condition(gas, cond, settings, reference=ctx["reference"][i],
                                       equilibrium=True, guess=ctx["profiles"].get(i))
    return {"values": {i: r.value for i, r in results.items()},
            "statuses": {i: r.status for i, r in results.items()},
            "messages": {i: r.message for i, r in results.items() if r.message},
            "t_eq_k": {i: r.t_eq_k for i, r in results.items()},
            "n_reactions": 0 if gas is None else gas.n_reactions,
            "seconds": time.perf_counter() - started}


def _equilibrium(gas: ct.Solution, cond: Condition) -> float | None:
    """The equilibrium temperature (K) of ``cond`` with ``gas``, None when the solver fails."""
    try:
        return equilibrium_temperature(gas, cond)
    except ct.CanteraError:
        return None


def relative_errors(reference: np.ndarray, values: np.ndarray, statuses: list[str]) -> np.ndarray:
    """Relative error ``|v - ref| / ref`` per condition ``[nc]``; a failure or no ignition scores
    1.0 (100 %), a skipped condition NaN."""
    out = np.ones(len(reference))
    for i, (ref, val, status) in enumerate(zip(reference, values, statuses)):
        if status == "skipped":
            out[i] = np.nan
        elif status == "ok" and np.isfinite(val) and val > 0:
            out[i] = abs(val - ref) / ref
    return out


@dataclass
class CandidateScore:
    """A scored candidate.

    ``values`` ``[nc]``: ignition delays (s) / flame speeds (m/s) / extinction residence times
    (s), NaN where missing; ``errors`` ``[nc]``: relative errors (1.0 = 100 % for a failure, NaN
    where skipped); ``t_eq_k`` ``[nc]`` (K) and ``eq_errors`` ``[nc]`` (relative to the detailed
    T_eq; 1.0 where it could not be computed); ``target_errors``: max relative error per target;
    ``violation``/``objective``/``passed``: see ``constraints.py``; ``seconds``: CPU seconds
    summed over tasks.
    """

    mask: np.ndarray
    n_species: int
    n_reactions: int
    values: np.ndarray
    statuses: list[str]
    errors: np.ndarray
    t_eq_k: np.ndarray
    eq_errors: np.ndarray
    target_errors: dict[str, float]
    violation: float
    objective: float
    passed: bool
    seconds: float
    messages: dict[int, str] = field(default_factory=dict)
    eq_error_k: float = float("nan")

    @property
    def max_error(self) -> float:
        """Largest relative error over the evaluated ignition, flame and PSR conditions."""
        finite = self.errors[np.isfinite(self.errors)]
        return float(finite.max()) if len(finite) else 0.0

    @property
    def mean_error(self) -> float:
        finite = self.errors[np.isfinite(self.errors)]
        return float(finite.mean()) if len(finite) else 0.0

    def species(self, names: list[str]) -> list[str]:
        return [n for n, k in zip(names, self.mask) if k]


class Evaluator:
    """Scores masks of one reduction problem through an executor, remembering every result.

    ``bounds`` are the targets' relative error bounds (0.05 = 5 %), ``weights`` their weights.
    """

    def __init__(self, config: ReductionConfig, reference: ReferenceTargets, executor,
                 yaml_text: str | None = None, phase: str | None = None, sha256: str | None = None):
        self.config = config
        self.reference = reference
        self.executor = executor
        self.bounds = {t: b / 100.0 for t, b in config.bounds_percent.items()}
        self.weights = {t: config.weight(t) for t in self.bounds}
        mech = config.mechanism
        self.species_names = mech.species_names
        conds = config.conditions
        self.kinds = [c.target for c in conds]
        self.n_conditions = len(conds)
        self.cheap = tuple(i for i, t in enumerate(self.kinds) if t == IGNITION)
        self.costly = tuple(i for i, t in enumerate(self.kinds) if t != IGNITION)
        self.ctx = {
            "yaml_text": yaml_text or mech.yaml_text, "phase": phase or mech.phase,
            "sha256": sha256 or mech.sha256, "conditions": [c.to_dict() for c in conds],
            "settings": config.simulation.to_dict(), "reference": reference.values.tolist(),
            "transport": bool(config.flames), "profiles": reference.profiles,
        }
        self._handle = None
        self.memo: dict[bytes, CandidateScore] = {}
        self.n_simulated = 0
        self.seconds = 0.0

    @property
    def handle(self):
        if self._handle is None:
            self._handle = self.executor.share(SharedContext(dict(self.ctx)))
        return self._handle

    def evaluate(self, masks: list[np.ndarray], progress: bool = False, desc: str = "candidates",
                 gate: bool = True) -> list[CandidateScore]:
        """Score ``masks`` (bool ``[ns]`` each), in order; already scored masks are not rerun.

        With ``gate``, flames and stirred reactors run only for candidates within the ignition and
        equilibrium bounds; without, every condition runs.
        """
        packed = [pack_mask(m) for m in masks]
        todo = list(dict.fromkeys(p for p in packed if p not in self.memo))
        if todo:
            started = time.perf_counter()
            if gate and self.costly:
                parts = self._run(todo, self.cheap, self.costly, progress, desc)
                onward = [p for p in todo if self._score(p, parts[p]).violation <= 1.0]
                for p, more in self._run(onward, self.costly, (), progress, f"{desc} (flames, PSR)").items():
                    parts[p] = [*parts[p], *more]
            else:
                parts = self._run(todo, tuple(range(self.n_conditions)), (), progress, desc)
            for p in todo:
                self.memo[p] = self._score(p, parts[p])
            self.seconds += time.perf_counter() - started
            self.n_simulated += len(todo)
        return [self.memo[p] for p in packed]

    def scored(self) -> list[CandidateScore]:
        """Every candidate scored so far, in the order they were first scored."""
        return list(self.memo.values())

    def _run(self, todo: list[bytes], run: tuple[int, ...], eq_only: tuple[int, ...], progress: bool,
             desc: str) -> dict[bytes, list[dict[str, Any]]]:
        """Task results per candidate: conditions ``run`` simulated, ``eq_only`` equilibrium only.

        Few candidates are split over conditions so every worker is busy; many go one per task.
        """
        from tqdm import tqdm

        parts: dict[bytes, list[dict[str, Any]]] = {p: [] for p in todo}
        if not todo:
            return parts
        workers = max(1, getattr(self.executor, "n_workers", 1))
        if len(todo) >= 2 * workers or workers == 1 or len(run) < 2:
            chunks = [run]
        else:
            per = max(1, -(-len(run) // (2 * workers)))
            chunks = [run[a:a + per] for a in range(0, len(run), per)]
        jobs = [((p, ci), (self.handle, p, chunk, eq_only if ci == 0 else ()))
                for p in todo for ci, chunk in enumerate(chunks)]
        bar = tqdm(total=len(todo), desc=desc, unit="cand", leave=False,
                   disable=None if progress else True)  # None: no bar when not a terminal
        for (p, _), res in self.executor.map_unordered(candidate_task, jobs):
            parts[p].append(res)
            if len(parts[p]) == len(chunks):
                bar.update()
        bar.close()
        return parts

    def _score(self, packed: bytes, parts: list[dict[str, Any]]) -> CandidateScore:
        nc = self.n_conditions
        mask = unpack_mask(packed, len(self.species_names))
        values = np.full(nc, np.nan)
        statuses = ["skipped"] * nc
        t_eq = np.full(nc, np.nan)
        messages: dict[int, str] = {}
        n_reactions = 0
        seconds = 0.0
        for part in parts:
            for i, v in part["values"].items():
                if part["statuses"][i] != "skipped" or statuses[i] == "skipped":
                    values[i] = np.nan if v is None else v
                    statuses[i] = part["statuses"][i]
                if part["t_eq_k"][i] is not None:
                    t_eq[i] = part["t_eq_k"][i]
            messages.update(part["messages"])
            n_reactions = max(n_reactions, part["n_reactions"])
            seconds += part["seconds"]
        errors = relative_errors(self.reference.values, values, statuses)
        detailed_t_eq = self.reference.t_eq_k
        diff = np.abs(t_eq - detailed_t_eq)
        eq_errors = np.where(np.isfinite(diff), diff / detailed_t_eq, 1.0)
        verdict = judge(errors, eq_errors, self.kinds, self.bounds, self.weights)
        eq_k = float(np.max(np.where(np.isfinite(diff), diff, np.inf))) if nc else 0.0
        return CandidateScore(mask=mask, n_species=int(mask.sum()), n_reactions=n_reactions,
                              values=values, statuses=statuses, errors=errors, t_eq_k=t_eq,
                              eq_errors=eq_errors, target_errors=verdict.errors,
                              violation=verdict.violation, objective=verdict.objective,
                              passed=verdict.passed, seconds=seconds, messages=messages,
                              eq_error_k=eq_k)


def verify_written(path: str, config: ReductionConfig, reference: ReferenceTargets,
                   executor, progress: bool = False) -> CandidateScore:
    """Independent check of a written reduced mechanism: load ``path`` from disk with Cantera and
    rerun every condition (every target, no gating) through the executor."""
    mech = load_mechanism(str(path))
    evaluator = Evaluator(config, reference, executor, yaml_text=mech.yaml_text, phase=mech.phase,
                          sha256=mech.sha256)
    evaluator.species_names = mech.species_names
    evaluator.ctx["direct"] = True
    full = np.ones(mech.n_species, dtype=bool)
    return evaluator.evaluate([full], progress=progress, desc="verify", gate=False)[0]
