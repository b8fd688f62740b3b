"""The evaluation core shared by every reduction method: score species masks against the detailed
mechanism.

A candidate is a boolean species mask ``[ns]`` (True = kept). :class:`Evaluator` sends candidates
to the executor (the mechanism travels once as YAML text + sha256; each worker keeps one detailed
``ct.Solution`` and builds reduced ones in memory), and turns the returned per-condition values
into relative errors. A reduced model that fails or does not ignite at a condition scores 100 %
there and the run goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.errors import cantera_message
from mechanisms.loading import load_mechanism, solution_from_yaml
from mechanisms.reduction.config import Condition, ReductionConfig, SimulationSettings
from mechanisms.reduction.targets import ConditionResult, ReferenceTargets, SharedContext, run_condition
from mechanisms.reduction.writer import builder_for

_LAST_MODELS: dict[tuple[str, bytes], ct.Solution] = {}


def pack_mask(mask: np.ndarray) -> bytes:
    """A boolean mask ``[ns]`` as compact bytes (hashable, cheap to send)."""
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(packed: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`pack_mask` for a mask of length ``n``."""
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[:n].astype(bool)


def candidate_task(ctx: SharedContext, packed: bytes, indices: tuple[int, ...]) -> dict[str, Any]:
    """Worker task: run conditions ``indices`` with the reduced model ``packed``; never raises for
    a Cantera failure. Returns plain data: values, statuses, equilibrium temperatures, seconds."""
    started = time.perf_counter()
    settings = SimulationSettings(**ctx["settings"])
    error = None
    if ctx.get("direct"):
        # verification: the mechanism exactly as Cantera loads it from the written file
        gas = solution_from_yaml(ctx["yaml_text"], ctx["phase"], ctx["sha256"])
    else:
        gas = _LAST_MODELS.get((ctx["sha256"], packed))
        if gas is None:
            builder = builder_for(ctx["yaml_text"], ctx["phase"], ctx["sha256"])
            try:
                gas = builder.solution(unpack_mask(packed, builder.n_species), transport=ctx["transport"])
            except ct.CanteraError as exc:
                error = cantera_message(exc)
            else:
                _LAST_MODELS.clear()  # keep one: tasks of a candidate split over conditions reuse it
                _LAST_MODELS[(ctx["sha256"], packed)] = gas
    results: dict[int, ConditionResult] = {}
    for i in indices:
        if gas is None:
            results[i] = ConditionResult(None, "failed", f"cannot build the model: {error}")
            continue
        cond = Condition.from_dict(ctx["conditions"][i])
        results[i] = run_condition(gas, cond, settings, reference=ctx["reference"][i],
                                   equilibrium=ctx["equilibrium"])
    return {"values": {i: r.value for i, r in results.items()},
            "statuses": {i: r.status for i, r in results.items()},
            "messages": {i: r.message for i, r in results.items() if r.message},
            "t_eq_k": {i: r.t_eq_k for i, r in results.items()},
            "n_reactions": 0 if gas is None else gas.n_reactions,
            "seconds": time.perf_counter() - started}


def relative_errors(reference: np.ndarray, values: list[float | None] | np.ndarray) -> np.ndarray:
    """Relative error ``|v - ref| / ref`` per condition ``[nc]``; a missing value (failure or no
    ignition) scores 1.0 (100 %)."""
    out = np.ones(len(reference))
    for i, (ref, val) in enumerate(zip(reference, values)):
        if val is not None and np.isfinite(val) and val > 0:
            out[i] = abs(val - ref) / ref
    return out


@dataclass
class CandidateScore:
    """A scored candidate.

    ``values`` ``[nc]``: ignition delays (s) / flame speeds (m/s), NaN where missing; ``errors``
    ``[nc]``: relative errors (1.0 = 100 % for a failure); ``t_eq_k`` ``[nc]`` (K) or None;
    ``eq_error_k``: max |ΔT_eq| (K) or None; ``seconds``: CPU seconds summed over tasks.
    """

    mask: np.ndarray
    n_species: int
    n_reactions: int
    values: np.ndarray
    statuses: list[str]
    errors: np.ndarray
    t_eq_k: np.ndarray | None
    eq_error_k: float | None
    passed: bool
    seconds: float
    messages: dict[int, str] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return float(self.errors.max()) if len(self.errors) else 0.0

    @property
    def mean_error(self) -> float:
        return float(self.errors.mean()) if len(self.errors) else 0.0

    def species(self, names: list[str]) -> list[str]:
        return [n for n, k in zip(names, self.mask) if k]


class Evaluator:
    """Scores masks of one reduction problem through an executor, remembering every result.

    ``bound`` is the relative error bound (0.05 = 5 %); ``equilibrium_error_k`` (K) makes the
    equilibrium temperature a target; ``equilibrium=True`` computes it even when it is not one.
    """

    def __init__(self, config: ReductionConfig, reference: ReferenceTargets, executor,
                 equilibrium: bool = False, yaml_text: str | None = None, phase: str | None = None,
                 sha256: str | None = None):
        self.config = config
        self.reference = reference
        self.executor = executor
        self.bound = config.error_percent / 100.0
        self.eq_bound = config.equilibrium_error_k
        self.equilibrium = equilibrium or self.eq_bound is not None
        mech = config.mechanism
        self.species_names = mech.species_names
        self.n_conditions = len(config.conditions)
        self.ctx = {
            "yaml_text": yaml_text or mech.yaml_text, "phase": phase or mech.phase,
            "sha256": sha256 or mech.sha256,
            "conditions": [c.to_dict() for c in config.conditions],
            "settings": config.simulation.to_dict(), "reference": reference.values.tolist(),
            "equilibrium": self.equilibrium, "transport": bool(config.flames),
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

    def evaluate(self, masks: list[np.ndarray], progress: bool = False,
                 desc: str = "candidates") -> list[CandidateScore]:
        """Score ``masks`` (bool ``[ns]`` each), in order; already scored masks are not rerun.

        Few candidates are split over conditions so every worker is busy; many go one per task.
        """
        from tqdm import tqdm

        packed = [pack_mask(m) for m in masks]
        todo = list(dict.fromkeys(p for p in packed if p not in self.memo))
        if todo:
            nc = self.n_conditions
            workers = max(1, getattr(self.executor, "n_workers", 1))
            if len(todo) >= 2 * workers or workers == 1:
                chunks = [tuple(range(nc))]
            else:
                per = max(1, -(-nc // (2 * workers)))
                chunks = [tuple(range(a, min(nc, a + per))) for a in range(0, nc, per)]
            jobs = [((p, ci), (self.handle, p, chunk)) for p in todo for ci, chunk in enumerate(chunks)]
            parts: dict[bytes, list[dict[str, Any]]] = {p: [] for p in todo}
            started = time.perf_counter()
            bar = tqdm(total=len(todo), desc=desc, unit="cand", leave=False,
                       disable=None if progress else True)  # None: no bar when not a terminal
            for (p, _), res in self.executor.map_unordered(candidate_task, jobs):
                parts[p].append(res)
                if len(parts[p]) == len(chunks):
                    self.memo[p] = self._score(p, parts.pop(p))
                    bar.update()
            bar.close()
            self.seconds += time.perf_counter() - started
            self.n_simulated += len(todo)
        return [self.memo[p] for p in packed]

    def _score(self, packed: bytes, parts: list[dict[str, Any]]) -> CandidateScore:
        nc = self.n_conditions
        mask = unpack_mask(packed, len(self.species_names))
        values = np.full(nc, np.nan)
        statuses = ["failed"] * nc
        t_eq = np.full(nc, np.nan) if self.equilibrium else None
        messages: dict[int, str] = {}
        n_reactions = 0
        seconds = 0.0
        for part in parts:
            for i, v in part["values"].items():
                values[i] = np.nan if v is None else v
                statuses[i] = part["statuses"][i]
                if t_eq is not None and part["t_eq_k"][i] is not None:
                    t_eq[i] = part["t_eq_k"][i]
            messages.update(part["messages"])
            n_reactions = max(n_reactions, part["n_reactions"])
            seconds += part["seconds"]
        errors = relative_errors(self.reference.values,
                                 [None if s != "ok" or not np.isfinite(v) else v
                                  for v, s in zip(values, statuses)])
        eq_err = None
        if t_eq is not None:
            diff = np.abs(t_eq - self.reference.t_eq_k)
            eq_err = float(np.nanmax(np.where(np.isfinite(diff), diff, np.inf)))
        passed = bool(errors.max() <= self.bound) if nc else True
        if self.eq_bound is not None:
            passed = passed and eq_err is not None and eq_err <= self.eq_bound
        return CandidateScore(mask=mask, n_species=int(mask.sum()), n_reactions=n_reactions,
                              values=values, statuses=statuses, errors=errors, t_eq_k=t_eq,
                              eq_error_k=eq_err, passed=passed, seconds=seconds, messages=messages)


def verify_written(path: str, config: ReductionConfig, reference: ReferenceTargets,
                   executor, progress: bool = False) -> CandidateScore:
    """Independent check of a written reduced mechanism: load ``path`` from disk with Cantera and
    rerun every condition (with equilibrium temperatures) through the executor."""
    mech = load_mechanism(str(path))
    evaluator = Evaluator(config, reference, executor, equilibrium=True, yaml_text=mech.yaml_text,
                          phase=mech.phase, sha256=mech.sha256)
    evaluator.species_names = mech.species_names
    evaluator.ctx["direct"] = True
    full = np.ones(mech.n_species, dtype=bool)
    return evaluator.evaluate([full], progress=progress, desc="verify")[0]
