"""DeePMR (Wang et al., Combust. Flame 2024): reduction as an optimisation over species-retention
vectors, guided by a neural network.

The free species (not forced on) form a boolean vector ``x`` ``[m]``. Each iteration:

1. simulate the candidates in parallel (through :class:`~mechanisms.reduction.evaluate.Evaluator`);
2. fit an MLP from ``x`` to ``y`` ``[2 nc]``, every target of every condition in units of its own
   bound: ``log10(value / detailed value) / log10(1 + bound)`` per ignition delay, flame speed or
   extinction time, and ``(T_eq / detailed T_eq - 1) / bound`` per equilibrium temperature, so that
   |y| ≤ 1 is within the bound (clipped to ±:data:`CLIP`; a failure is +CLIP; a condition not run
   because a cheaper target had already failed is left out of the loss), warm-started from the last
   iteration's weights, each output weighted by its target's weight;
3. parents = the best ``parent-fraction`` of everything simulated (passing candidates by size, then
   objective; failing ones after them by violation, see ``constraints.py``);
4. children = parents with 1…``max-deletions`` random species removed, screened by the MLP: a child
   is kept when its predicted max |y| is within a screen that starts at ``screen-bound-start``
   bounds and decays by ``screen-bound-decay`` per iteration (never below 1 bound); the smallest
   screened children are simulated next.

The loop stops when ``patience`` iterations in a row find no smaller passing candidate, when every
child has been simulated, or when the budget (iterations, simulations) is spent. An iteration in
which fewer than a quarter of ``candidates-per-iteration`` children pass the screen tops them up with
the children the MLP rates best, so that it keeps learning where the boundary is. Everything that
decides the next iteration (simulated archive, MLP weights, history) is checkpointed after each
iteration in one npz written atomically (no pickle; a JSON mirror of the loop state beside it);
rerunning the same command resumes, and gives the same answer as an uninterrupted run with the same
seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechanisms.atomic_io import atomic_write_npz, atomic_write_text
from mechanisms.errors import DeepkinError, InputError
from mechanisms.reduction import drgep
from mechanisms.reduction.config import EQUILIBRIUM, DeePMRSettings
from mechanisms.reduction.evaluate import CandidateScore, Evaluator
from mechanisms.reduction.method import MethodInputs, MethodOutcome

CHECKPOINT_VERSION = 2
BUDGET_STOPS = ("iteration budget", "simulation budget")
CLIP = 25.0  # network targets are clipped at this many bounds


@dataclass
class DeePMRResult:
    """Candidates that passed, best first (fewest species, then smallest max error), and history."""

    ranked: list[CandidateScore]
    history: list[dict[str, Any]] = field(default_factory=list)
    n_simulated: int = 0
    stop_reason: str = ""
    resumed_from: int | None = None


class Archive:
    """Every simulated candidate: ``x`` ``[N, m]`` uint8, ``y`` ``[N, n_out]`` (NaN: not run),
    ``err`` ``[N]`` (violation), ``objective`` ``[N]``, ``passed`` ``[N]``, ``size`` ``[N]``
    (species kept), ``iteration`` ``[N]``."""

    def __init__(self, m: int, n_out: int):
        self.x = np.zeros((0, m), dtype=np.uint8)
        self.y = np.zeros((0, n_out))
        self.err = np.zeros(0)
        self.objective = np.zeros(0)
        self.passed = np.zeros(0, dtype=bool)
        self.size = np.zeros(0, dtype=np.int64)
        self.iteration = np.zeros(0, dtype=np.int64)
        self.seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.err)

    def add(self, x: np.ndarray, y: np.ndarray, err: np.ndarray, objective: np.ndarray,
            passed: np.ndarray, size: np.ndarray, iteration: int) -> None:
        self.x = np.vstack([self.x, x.astype(np.uint8)])
        self.y = np.vstack([self.y, y])
        self.err = np.concatenate([self.err, err])
        self.objective = np.concatenate([self.objective, objective])
        self.passed = np.concatenate([self.passed, passed.astype(bool)])
        self.size = np.concatenate([self.size, size.astype(np.int64)])
        self.iteration = np.concatenate([self.iteration, np.full(len(err), iteration, dtype=np.int64)])
        self.seen.update(row.tobytes() for row in x.astype(np.uint8))

    def ranking(self) -> np.ndarray:
        """Indices best first: passing by (size, objective), then failing by (violation, size)."""
        fail = ~self.passed
        key_size = np.where(fail, np.iinfo(np.int64).max, self.size)
        second = np.where(fail, self.err, self.objective)
        return np.lexsort((self.size, second, key_size)) if len(self) else np.zeros(0, dtype=int)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "err": self.err, "objective": self.objective,
                "passed": self.passed, "size": self.size, "iteration": self.iteration}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.x, self.y, self.err = arrays["x"].astype(np.uint8), arrays["y"], arrays["err"]
        self.objective = arrays["objective"]
        self.passed, self.size = arrays["passed"].astype(bool), arrays["size"].astype(np.int64)
        self.iteration = arrays["iteration"].astype(np.int64)
        self.seen = {row.tobytes() for row in self.x}


class Surrogate:
    """MLP from a retention vector ``[m]`` (0/1) to the targets in units of their bounds ``[n_out]``
    (torch, CPU); ``output_weights`` ``[n_out]`` weigh its loss."""

    def __init__(self, m: int, nc: int, hidden: tuple[int, ...], seed: int,
                 output_weights: np.ndarray | None = None):
        import torch

        torch.manual_seed(seed)
        layers: list[Any] = []
        width = m
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.GELU()]
            width = h
        layers.append(torch.nn.Linear(width, nc))
        self.net = torch.nn.Sequential(*layers).double()
        self.output_weights = np.ones(nc) if output_weights is None else np.asarray(output_weights)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> float:
        """Full-batch Adam on the weighted mean squared error over the known entries of ``y``
        (NaN: unknown), from the current weights; returns the final loss."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic and polite on a shared machine
        try:
            torch.manual_seed(seed)
            xt = torch.as_tensor(x, dtype=torch.float64)
            known = np.isfinite(y)
            yt = torch.as_tensor(np.where(known, y, 0.0), dtype=torch.float64)
            wt = torch.as_tensor(known * self.output_weights[np.newaxis, :], dtype=torch.float64)
            total = wt.sum().clamp(min=1e-12)
            opt = torch.optim.Adam(self.net.parameters(), lr=lr)
            loss = torch.zeros(())
            for _ in range(epochs):
                opt.zero_grad()
                loss = torch.sum(wt * (self.net(xt) - yt) ** 2) / total
                loss.backward()
                opt.step()
            return float(loss.detach())
        finally:
            torch.set_num_threads(threads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted ``[n, nc]`` for ``x`` ``[n, m]``."""
        import torch

        with torch.no_grad():
            return self.net(torch.as_tensor(x, dtype=torch.float64)).numpy()

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"mlp.{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        import torch

        state = {k[4:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("mlp.")}
        self.net.load_state_dict(state)


def network_targets(scores: list[CandidateScore], evaluator: Evaluator) -> np.ndarray:
    """``y`` ``[n, 2 nc]``: each condition's value, then each condition's equilibrium temperature,
    in units of its target's bound (see the module docstring); failures at +:data:`CLIP`, NaN where
    a condition was not run."""
    reference = evaluator.reference
    value_scale = np.array([math.log10(1.0 + evaluator.bounds[k]) for k in evaluator.kinds])
    eq_scale = evaluator.bounds[EQUILIBRIUM]
    out = np.empty((len(scores), 2 * len(reference.values)))
    for k, s in enumerate(scores):
        ok = np.array([st == "ok" for st in s.statuses]) & np.isfinite(s.values) & (s.values > 0)
        ratio = np.log10(np.where(ok, s.values, 1.0) / reference.values) / value_scale
        skipped = np.array([st == "skipped" for st in s.statuses])
        values = np.where(ok, ratio, np.where(skipped, np.nan, CLIP))
        t_eq = np.where(np.isfinite(s.t_eq_k), s.t_eq_k / reference.t_eq_k - 1.0, np.inf) / eq_scale
        out[k] = np.clip(np.concatenate([values, t_eq]), -CLIP, CLIP)
    return out


def output_weights(evaluator: Evaluator) -> np.ndarray:
    """The loss weight of every network output ``[2 nc]``: its target's weight."""
    return np.array([evaluator.weights[k] for k in evaluator.kinds]
                    + [evaluator.weights[EQUILIBRIUM]] * len(evaluator.kinds))


def settings_key(evaluator: Evaluator, forced: np.ndarray, settings: DeePMRSettings,
                 start: np.ndarray) -> str:
    """sha256 of everything that makes a checkpoint valid for this run.

    The budget (``iterations``, ``max-simulations``, ``patience``) is left out: raising it and
    rerunning continues a finished run instead of starting over.
    """
    tunables = {k: v for k, v in settings.to_dict().items()
                if k not in ("iterations", "max_simulations", "patience")}
    payload = {"targets": evaluator.reference.key, "bounds": evaluator.bounds,
               "weights": evaluator.weights,
               "forced": np.asarray(forced, dtype=int).tolist(), "start": np.asarray(start, int).tolist(),
               "deepmr": tunables, "version": CHECKPOINT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_deepmr(evaluator: Evaluator, forced: np.ndarray, settings: DeePMRSettings,
               checkpoint: str | Path, start: np.ndarray | None = None, progress: bool = False,
               log: Callable[[str], None] | None = None) -> DeePMRResult:
    """Run (or resume) the DeePMR loop; see the module docstring.

    ``forced`` ``[ns]`` bool: species every candidate keeps; ``start`` ``[ns]`` bool: the model
    the first population is drawn around (default: the detailed model); ``checkpoint``: path
    prefix of ``<prefix>.json`` and ``<prefix>.npz``; ``log(str)`` reports each iteration.
    """
    loop = _Loop(evaluator, forced, settings, checkpoint, start, progress, log or (lambda _msg: None))
    loop.resume()
    if len(loop.archive) == 0:
        loop.first_iteration()
    while not loop.stop_reason:
        loop.stop_reason = loop.reason_to_stop()
        if not loop.stop_reason:
            loop.next_iteration()
    loop.save()
    return loop.result()


class _Loop:
    """One DeePMR run: what the checkpoint holds (archive, MLP, history, counters) and the steps."""

    def __init__(self, evaluator: Evaluator, forced: np.ndarray, settings: DeePMRSettings,
                 checkpoint: str | Path, start: np.ndarray | None, progress: bool,
                 log: Callable[[str], None]):
        self.evaluator = evaluator
        self.settings = settings
        self.progress = progress
        self.log = log
        self.forced = np.asarray(forced, dtype=bool)
        ns = len(self.forced)
        self.start = (np.ones(ns, dtype=bool) if start is None
                      else (np.asarray(start, dtype=bool) | self.forced))
        self.free = np.nonzero(~self.forced)[0]
        m, n_out = len(self.free), 2 * evaluator.n_conditions
        self.key = settings_key(evaluator, self.forced, settings, self.start)
        self.json_path = Path(f"{checkpoint}.json")
        self.npz_path = Path(f"{checkpoint}.npz")
        self.archive = Archive(m, n_out)
        self.surrogate = Surrogate(m, n_out, settings.hidden, settings.seed, output_weights(evaluator))
        self.history: list[dict[str, Any]] = []
        self.iteration = 0
        self.stall = 0
        self.stop_reason = ""
        self.resumed: int | None = None

    def resume(self) -> None:
        """Load the checkpoint when it belongs to this run's settings (else start over)."""
        if not self.npz_path.is_file():
            return
        # the npz holds the whole state (the JSON file is its readable mirror): one atomic write
        with np.load(self.npz_path) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        state = json.loads(str(data["state_json"])) if "state_json" in data else {}
        if state.get("key") != self.key:
            self.log(f"{self.npz_path} belongs to other settings; starting over")
            return
        self.archive.load(data)
        self.surrogate.load_arrays(data)
        self.iteration, self.stall = state["iteration"], state["stall"]
        self.history, self.stop_reason = state["history"], state.get("stop_reason", "")
        if self.stop_reason.startswith(BUDGET_STOPS) or self.stop_reason.startswith("no smaller"):
            self.stop_reason = ""  # the budget may have been raised: the loop checks it again
        self.resumed = self.iteration
        self.log(f"resuming DeePMR from {self.json_path} after iteration {self.iteration} "
                 f"({len(self.archive)} candidates simulated)")

    def save(self) -> None:
        """Write the checkpoint: one npz (atomically), then its JSON mirror."""
        text = json.dumps({"version": CHECKPOINT_VERSION, "key": self.key, "iteration": self.iteration,
                           "stall": self.stall, "stop_reason": self.stop_reason,
                           "history": self.history, "n_simulated": len(self.archive)}, indent=1)
        atomic_write_npz(self.npz_path, **self.archive.arrays(), **self.surrogate.state_arrays(),
                         state_json=np.array(text))
        atomic_write_text(self.json_path, text)

    def first_iteration(self) -> None:
        """Iteration 0: random deletions around the start model, simulated; the MLP's first fit."""
        s = self.settings
        started = time.perf_counter()
        info = self.simulate(self.initial_population(np.random.default_rng([s.seed, 0])), 0)
        self.fit(s.epochs * 2, s.seed)
        self.record({"iteration": 0, **info, "best_size": self.best_size(), "screened": None,
                     "screen_bound": None, "seconds": time.perf_counter() - started})

    def reason_to_stop(self) -> str:
        """Why the loop must stop before another iteration, or ``""``."""
        s = self.settings
        if self.iteration >= s.iterations:
            return f"iteration budget ({s.iterations}) spent"
        if len(self.archive) >= s.max_simulations:
            return f"simulation budget ({s.max_simulations}) spent"
        if self.stall >= s.patience:
            return self._stalled()
        return ""

    def next_iteration(self) -> None:
        """One iteration: children of the best → screen → select → simulate → refit → checkpoint."""
        s = self.settings
        self.iteration += 1
        started = time.perf_counter()
        rng = np.random.default_rng([s.seed, self.iteration])
        children = self.children(rng)
        bound = max(1.0, s.screen_bound_start * s.screen_bound_decay ** (self.iteration - 1))
        info: dict[str, Any] = {"simulated": 0, "passed": 0, "smallest_passing": None}
        screened_n = explored = 0
        if len(children):
            pred, screened = self.screen(children, bound)
            chosen, explored = self.select(children, pred, screened, rng)
            screened_n = len(screened)
            if chosen:
                info = self.simulate([children[i] for i in chosen], self.iteration)
        self.update_stall(info["smallest_passing"], has_children=len(children) > 0)
        if info["simulated"]:
            self.fit(s.epochs, s.seed + self.iteration)
        self.record({"iteration": self.iteration, **info, "best_size": self.best_size(),
                     "children": len(children), "screened": screened_n, "explored": explored,
                     "screen_bound": bound, "seconds": time.perf_counter() - started})

    def initial_population(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The start model and up to ``initial-candidates`` - 1 distinct copies of it with k of its
        free species removed at random, k log-uniform in 1 … half of them; vectors ``[m]`` uint8.

        Log-uniform, not uniform: a large mechanism has many species whose removal alone breaks a
        bound, and a copy with dozens removed almost always fails; the network first needs to see
        which single and double removals pass (n-dodecane: 3 of 200 uniform draws passed).
        """
        target = self.settings.initial_candidates
        x0 = self.start[self.free].astype(np.uint8)
        population = [x0]
        seen = {x0.tobytes()}
        kept = np.nonzero(x0)[0]
        attempts = 0
        while len(population) < target and attempts < 50 * target:
            attempts += 1
            if len(kept) == 0:
                break
            most = max(1, len(kept) // 2)
            k = min(most, int(math.exp(rng.uniform(0.0, math.log(most + 1)))))
            x = x0.copy()
            x[rng.choice(kept, size=min(k, len(kept)), replace=False)] = 0
            if x.tobytes() not in seen:
                seen.add(x.tobytes())
                population.append(x)
        return population

    def children(self, rng: np.random.Generator) -> np.ndarray:
        """Children ``[n, m]`` of the best ``parent-fraction`` of the archive: 1 … ``max-deletions``
        random species removed, each distinct and never simulated before."""
        s = self.settings
        order = self.archive.ranking()
        n_parents = max(2, int(math.ceil(s.parent_fraction * len(self.archive))))
        children: dict[bytes, np.ndarray] = {}
        for parent in self.archive.x[order[:n_parents]]:
            kept = np.nonzero(parent)[0]
            if len(kept) == 0:
                continue
            for _ in range(s.children_per_parent):
                d = int(rng.integers(1, min(s.max_deletions, len(kept)) + 1))
                child = parent.copy()
                child[rng.choice(kept, size=d, replace=False)] = 0
                b = child.tobytes()
                if b not in self.archive.seen and b not in children:
                    children[b] = child
        return np.array(list(children.values()))

    def screen(self, children: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
        """The MLP's predicted violation (max |y|, in bounds) ``[n]`` of each child and the indices
        of those within ``bound``."""
        pred = np.abs(self.surrogate.predict(children)).max(axis=1)
        return pred, np.nonzero(pred <= bound)[0]

    def select(self, children: np.ndarray, pred: np.ndarray, screened: np.ndarray,
               rng: np.random.Generator) -> tuple[list[int], int]:
        """Indices of the children to simulate and how many of them did not pass the screen.

        Of the screened ones the smallest (70 % of ``candidates-per-iteration``) and a random draw
        of the rest; below a quarter of the budget, topped up with the best-rated rejected ones.
        """
        s = self.settings
        budget = min(s.candidates_per_iteration, s.max_simulations - len(self.archive))
        chosen: list[int] = []
        if len(screened):
            size = children[screened].sum(axis=1)
            ranked = screened[np.lexsort((pred[screened], size))]
            n_best = min(len(ranked), max(1, int(round(0.7 * budget))))
            chosen = list(ranked[:n_best])
            rest = ranked[n_best:]
            if len(rest) and budget > n_best:
                chosen += list(rng.choice(rest, size=min(len(rest), budget - n_best), replace=False))
        floor = max(1, budget // 4)
        explored = 0
        if len(chosen) < floor:
            # too few predicted to pass: add the children the MLP rates best, so that it learns
            # where the boundary is (the iteration is a stall unless one of them passes)
            by_pred = np.argsort(pred, kind="stable")
            rejected = by_pred[~np.isin(by_pred, screened)]
            extra = list(rejected[:floor - len(chosen)])
            explored = len(extra)
            chosen += extra
        return chosen, explored

    def simulate(self, xs: list[np.ndarray], iteration: int) -> dict[str, Any]:
        """Score the vectors ``xs`` through the evaluator and add them to the archive."""
        scores = self.evaluator.evaluate([self.full_mask(x) for x in xs], progress=self.progress,
                                         desc=f"deepmr iteration {iteration}")
        y = network_targets(scores, self.evaluator)
        err = np.array([sc.violation for sc in scores])
        objective = np.array([sc.objective for sc in scores])
        passed = np.array([sc.passed for sc in scores])
        size = np.array([sc.n_species for sc in scores])
        self.archive.add(np.array(xs, dtype=np.uint8), y, err, objective, passed, size, iteration)
        best = int(size[passed].min()) if passed.any() else None
        return {"simulated": len(xs), "passed": int(passed.sum()), "smallest_passing": best}

    def fit(self, epochs: int, seed: int) -> None:
        """Refit the MLP on the whole archive, from its current weights."""
        self.surrogate.fit(self.archive.x, self.archive.y, epochs, self.settings.learning_rate, seed)

    def update_stall(self, smallest_passing: int | None, has_children: bool) -> None:
        """Count an iteration without a smaller passing candidate; stop on patience or no children."""
        previous_best = min((h["best_size"] for h in self.history if h["best_size"] is not None),
                            default=None)
        improved = smallest_passing is not None and (previous_best is None
                                                     or smallest_passing < previous_best)
        self.stall = 0 if improved else self.stall + 1
        if not has_children:
            self.stop_reason = "every child of the parents has been simulated"
        elif self.stall >= self.settings.patience:
            self.stop_reason = self._stalled()

    def record(self, entry: dict[str, Any]) -> None:
        """Append an iteration to the history, log it and checkpoint."""
        self.history.append(entry)
        self.log(_line(entry))
        self.save()

    def result(self) -> DeePMRResult:
        """The passing candidates best first (the top 10, rescored: the evaluator remembers them)."""
        order = self.archive.ranking()
        ranked = [i for i in order if self.archive.passed[i]]
        scores = self.evaluator.evaluate([self.full_mask(self.archive.x[i]) for i in ranked[:10]])
        return DeePMRResult(ranked=scores, history=self.history, n_simulated=len(self.archive),
                            stop_reason=self.stop_reason, resumed_from=self.resumed)

    def best_size(self) -> int | None:
        passed = self.archive.passed
        return int(self.archive.size[passed].min()) if passed.any() else None

    def full_mask(self, x: np.ndarray) -> np.ndarray:
        """The species mask ``[ns]`` of a free-species vector ``x`` ``[m]``."""
        mask = self.forced.copy()
        mask[self.free] = x.astype(bool)
        return mask

    def _stalled(self) -> str:
        return f"no smaller passing candidate in {self.settings.patience} iteration(s)"


def _line(h: dict[str, Any]) -> str:
    screened = ("" if h.get("screened") is None
                else f", {h['screened']} of {h['children']} children screened in")
    if h.get("explored"):
        screened += f" + {h['explored']} best-rated explored"
    return (f"deepmr iteration {h['iteration']}: {h['simulated']} simulated, {h['passed']} passed"
            f"{screened}; smallest passing so far {h['best_size']} species ({h['seconds']:.1f} s)")


def reduce(inputs: MethodInputs) -> MethodOutcome:
    """DeePMR reduction from the detailed model, or around the DRGEP answer (``deepmr.start``);
    the checkpoint lives in ``inputs.out_dir``."""
    settings = inputs.config.deepmr
    start = None
    details: dict[str, Any] = {}
    if settings.start == "drgep":
        if not inputs.config.targets:
            raise InputError("deepmr.start: 'drgep' needs target species (targets: [...])")
        start = drgep.reduce(inputs).candidates[0].mask
        details["start_species"] = int(start.sum())
        inputs.log(f"deepmr starts around the DRGEP model of {int(start.sum())} species")
    result = run_deepmr(inputs.evaluator, inputs.forced, settings, inputs.out_dir / "deepmr-checkpoint",
                        start=start, progress=inputs.progress, log=inputs.log)
    details.update({"history": result.history, "stop_reason": result.stop_reason,
                    "resumed_from_iteration": result.resumed_from, "settings": settings.to_dict(),
                    "archive_size": result.n_simulated})
    if not result.ranked:
        raise DeepkinError("deepmr: no candidate met the error bound (not even the detailed model); "
                           "check the conditions")
    return MethodOutcome(result.ranked, details=details)
