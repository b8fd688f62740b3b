"""DeePMR (Wang et al., Combust. Flame 2024): reduction as an optimisation over species-retention
vectors, guided by a neural network.

The free species (not forced on) form a boolean vector ``x`` ``[m]``. Each iteration:

1. simulate the candidates in parallel (through :class:`~mechanisms.reduction.Evaluator`);
2. fit an MLP from ``x`` to ``y = log10(value / detailed value)`` per condition ``[nc]`` (clipped
   to ±log10(cap-factor); a failure or no ignition is the cap), warm-started from the last
   iteration's weights;
3. parents = the best ``parent-fraction`` of everything simulated (passing candidates by size, then
   error; failing ones after them by error);
4. children = parents with 1…``max-deletions`` random species removed, screened by the MLP: a child
   is kept when its predicted max |y| is within a log-error bound that starts at
   ``screen-bound-start`` × log10(1 + error) and decays by ``screen-bound-decay`` per iteration
   (never below log10(1 + error)); the smallest screened children are simulated next.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechanisms.atomic_io import atomic_write_npz, atomic_write_text
from mechanisms.reduce_config import DeePMRSettings
from mechanisms.reduction import CandidateScore, Evaluator

CHECKPOINT_VERSION = 1
BUDGET_STOPS = ("iteration budget", "simulation budget")


@dataclass
class DeePMRResult:
    """Candidates that passed, best first (fewest species, then smallest max error), and history."""

    ranked: list[CandidateScore]
    history: list[dict[str, Any]] = field(default_factory=list)
    n_simulated: int = 0
    stop_reason: str = ""
    resumed_from: int | None = None


class Archive:
    """Every simulated candidate: ``x`` ``[N, m]`` uint8, ``y`` ``[N, nc]``, ``err`` ``[N]`` (max
    relative error), ``passed`` ``[N]``, ``size`` ``[N]`` (species kept), ``iteration`` ``[N]``."""

    def __init__(self, m: int, nc: int):
        self.x = np.zeros((0, m), dtype=np.uint8)
        self.y = np.zeros((0, nc))
        self.err = np.zeros(0)
        self.passed = np.zeros(0, dtype=bool)
        self.size = np.zeros(0, dtype=np.int64)
        self.iteration = np.zeros(0, dtype=np.int64)
        self.seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.err)

    def add(self, x: np.ndarray, y: np.ndarray, err: np.ndarray, passed: np.ndarray,
            size: np.ndarray, iteration: int) -> None:
        self.x = np.vstack([self.x, x.astype(np.uint8)])
        self.y = np.vstack([self.y, y])
        self.err = np.concatenate([self.err, err])
        self.passed = np.concatenate([self.passed, passed.astype(bool)])
        self.size = np.concatenate([self.size, size.astype(np.int64)])
        self.iteration = np.concatenate([self.iteration, np.full(len(err), iteration, dtype=np.int64)])
        self.seen.update(row.tobytes() for row in x.astype(np.uint8))

    def ranking(self) -> np.ndarray:
        """Indices best first: passing by (size, error), then failing by (error, size)."""
        fail = ~self.passed
        key_size = np.where(fail, np.iinfo(np.int64).max, self.size)
        return np.lexsort((self.size, self.err, key_size)) if len(self) else np.zeros(0, dtype=int)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "err": self.err, "passed": self.passed, "size": self.size,
                "iteration": self.iteration}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.x, self.y, self.err = arrays["x"].astype(np.uint8), arrays["y"], arrays["err"]
        self.passed, self.size = arrays["passed"].astype(bool), arrays["size"].astype(np.int64)
        self.iteration = arrays["iteration"].astype(np.int64)
        self.seen = {row.tobytes() for row in self.x}


class Surrogate:
    """MLP from a retention vector ``[m]`` (0/1) to log10 value ratios ``[nc]`` (torch, CPU)."""

    def __init__(self, m: int, nc: int, hidden: tuple[int, ...], seed: int):
        import torch

        torch.manual_seed(seed)
        layers: list[Any] = []
        width = m
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.GELU()]
            width = h
        layers.append(torch.nn.Linear(width, nc))
        self.net = torch.nn.Sequential(*layers).double()

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> float:
        """Full-batch Adam on mean squared error, from the current weights; returns the final loss."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic and polite on a shared machine
        try:
            torch.manual_seed(seed)
            xt = torch.as_tensor(x, dtype=torch.float64)
            yt = torch.as_tensor(y, dtype=torch.float64)
            opt = torch.optim.Adam(self.net.parameters(), lr=lr)
            loss = torch.zeros(())
            for _ in range(epochs):
                opt.zero_grad()
                loss = torch.mean((self.net(xt) - yt) ** 2)
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


def _targets(scores: list[CandidateScore], reference: np.ndarray, cap: float) -> np.ndarray:
    """``y`` ``[n, nc]``: log10(value / reference) clipped to ±log10(cap); failures at +log10(cap)."""
    top = math.log10(cap)
    out = np.full((len(scores), len(reference)), top)
    for k, s in enumerate(scores):
        ok = np.array([st == "ok" for st in s.statuses]) & np.isfinite(s.values)
        ratio = np.where(ok, s.values, 1.0) / reference
        out[k] = np.where(ok, np.clip(np.log10(ratio), -top, top), top)
    return out


def settings_key(evaluator: Evaluator, forced: np.ndarray, settings: DeePMRSettings,
                 start: np.ndarray) -> str:
    """sha256 of everything that makes a checkpoint valid for this run.

    The budget (``iterations``, ``max-simulations``, ``patience``) is left out: raising it and
    rerunning continues a finished run instead of starting over.
    """
    tunables = {k: v for k, v in settings.to_dict().items()
                if k not in ("iterations", "max_simulations", "patience")}
    payload = {"targets": evaluator.reference.key, "bound": evaluator.bound, "eq": evaluator.eq_bound,
               "forced": np.asarray(forced, dtype=int).tolist(), "start": np.asarray(start, int).tolist(),
               "deepmr": tunables, "version": CHECKPOINT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_deepmr(evaluator: Evaluator, forced: np.ndarray, settings: DeePMRSettings,
               checkpoint: str | Path, start: np.ndarray | None = None, progress: bool = False,
               log=None) -> DeePMRResult:
    """Run (or resume) the DeePMR loop; see the module docstring.

    ``forced`` ``[ns]`` bool: species every candidate keeps; ``start`` ``[ns]`` bool: the model
    the first population is drawn around (default: the detailed model); ``checkpoint``: path
    prefix of ``<prefix>.json`` and ``<prefix>.npz``; ``log(str)`` reports each iteration.
    """
    log = log or (lambda _msg: None)
    forced = np.asarray(forced, dtype=bool)
    ns = len(forced)
    start = np.ones(ns, dtype=bool) if start is None else (np.asarray(start, dtype=bool) | forced)
    free = np.nonzero(~forced)[0]
    m = len(free)
    nc = evaluator.n_conditions
    reference = evaluator.reference.values
    cap = evaluator.config.simulation.cap_factor
    base_bound = math.log10(1.0 + evaluator.bound)
    key = settings_key(evaluator, forced, settings, start)
    json_path = Path(f"{checkpoint}.json")
    npz_path = Path(f"{checkpoint}.npz")

    def full_mask(x: np.ndarray) -> np.ndarray:
        mask = forced.copy()
        mask[free] = x.astype(bool)
        return mask

    archive = Archive(m, nc)
    surrogate = Surrogate(m, nc, settings.hidden, settings.seed)
    history: list[dict[str, Any]] = []
    iteration, stall, stop_reason, resumed = 0, 0, "", None
    if npz_path.is_file():
        # the npz holds the whole state (the JSON file is its readable mirror): one atomic write
        with np.load(npz_path) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        state = json.loads(str(data["state_json"])) if "state_json" in data else {}
        if state.get("key") == key:
            archive.load(data)
            surrogate.load_arrays(data)
            iteration, stall = state["iteration"], state["stall"]
            history, stop_reason = state["history"], state.get("stop_reason", "")
            if stop_reason.startswith(BUDGET_STOPS) or stop_reason.startswith("no smaller"):
                stop_reason = ""  # the budget may have been raised: the loop checks it again
            resumed = iteration
            log(f"resuming DeePMR from {json_path} after iteration {iteration} "
                f"({len(archive)} candidates simulated)")
        else:
            log(f"{npz_path} belongs to other settings; starting over")

    def simulate(xs: list[np.ndarray], it: int) -> dict[str, Any]:
        scores = evaluator.evaluate([full_mask(x) for x in xs], progress=progress,
                                    desc=f"deepmr iteration {it}")
        y = _targets(scores, reference, cap)
        err = np.array([s.max_error for s in scores])
        passed = np.array([s.passed for s in scores])
        size = np.array([s.n_species for s in scores])
        archive.add(np.array(xs, dtype=np.uint8), y, err, passed, size, it)
        best = int(size[passed].min()) if passed.any() else None
        return {"simulated": len(xs), "passed": int(passed.sum()), "smallest_passing": best}

    def save() -> None:
        text = json.dumps({"version": CHECKPOINT_VERSION, "key": key, "iteration": iteration,
                           "stall": stall, "stop_reason": stop_reason, "history": history,
                           "n_simulated": len(archive)}, indent=1)
        atomic_write_npz(npz_path, **archive.arrays(), **surrogate.state_arrays(),
                         state_json=np.array(text))
        atomic_write_text(json_path, text)

    def best_size() -> int | None:
        return int(archive.size[archive.passed].min()) if archive.passed.any() else None

    started = time.perf_counter()
    if len(archive) == 0:
        rng = np.random.default_rng([settings.seed, 0])
        x0 = start[free].astype(np.uint8)
        population = [x0]
        seen = {x0.tobytes()}
        kept = np.nonzero(x0)[0]
        attempts = 0
        while len(population) < settings.initial_candidates and attempts < 50 * settings.initial_candidates:
            attempts += 1
            if len(kept) == 0:
                break
            k = int(rng.integers(1, max(2, len(kept) // 2 + 1)))
            x = x0.copy()
            x[rng.choice(kept, size=min(k, len(kept)), replace=False)] = 0
            if x.tobytes() not in seen:
                seen.add(x.tobytes())
                population.append(x)
        info = simulate(population, 0)
        surrogate.fit(archive.x, archive.y, settings.epochs * 2, settings.learning_rate, settings.seed)
        history.append({"iteration": 0, **info, "best_size": best_size(), "screened": None,
                        "bound_log10": None, "seconds": time.perf_counter() - started})
        log(_line(history[-1]))
        save()

    while not stop_reason:
        if iteration >= settings.iterations:
            stop_reason = f"iteration budget ({settings.iterations}) spent"
            break
        if len(archive) >= settings.max_simulations:
            stop_reason = f"simulation budget ({settings.max_simulations}) spent"
            break
        if stall >= settings.patience:
            stop_reason = f"no smaller passing candidate in {settings.patience} iteration(s)"
            break
        iteration += 1
        it_started = time.perf_counter()
        rng = np.random.default_rng([settings.seed, iteration])
        order = archive.ranking()
        n_parents = max(2, int(math.ceil(settings.parent_fraction * len(archive))))
        parents = archive.x[order[:n_parents]]
        children: dict[bytes, np.ndarray] = {}
        for parent in parents:
            kept = np.nonzero(parent)[0]
            if len(kept) == 0:
                continue
            for _ in range(settings.children_per_parent):
                d = int(rng.integers(1, min(settings.max_deletions, len(kept)) + 1))
                child = parent.copy()
                child[rng.choice(kept, size=d, replace=False)] = 0
                b = child.tobytes()
                if b not in archive.seen and b not in children:
                    children[b] = child
        bound = max(base_bound, base_bound * settings.screen_bound_start
                    * settings.screen_bound_decay ** (iteration - 1))
        info: dict[str, Any] = {"simulated": 0, "passed": 0, "smallest_passing": None}
        screened_n = explored = 0
        if children:
            cx = np.array(list(children.values()))
            pred = np.abs(surrogate.predict(cx)).max(axis=1)
            ok = np.nonzero(pred <= bound)[0]
            screened_n = len(ok)
            budget = min(settings.candidates_per_iteration, settings.max_simulations - len(archive))
            chosen: list[int] = []
            if len(ok):
                size = cx[ok].sum(axis=1)
                ranked = ok[np.lexsort((pred[ok], size))]
                n_best = min(len(ranked), max(1, int(round(0.7 * budget))))
                chosen = list(ranked[:n_best])
                rest = ranked[n_best:]
                if len(rest) and budget > n_best:
                    chosen += list(rng.choice(rest, size=min(len(rest), budget - n_best), replace=False))
            floor = max(1, budget // 4)
            if len(chosen) < floor:
                # too few predicted to pass: add the children the MLP rates best, so that it learns
                # where the boundary is (the iteration is a stall unless one of them passes)
                by_pred = np.argsort(pred, kind="stable")
                rejected = by_pred[~np.isin(by_pred, ok)]
                extra = list(rejected[:floor - len(chosen)])
                explored = len(extra)
                chosen += extra
            if chosen:
                info = simulate([cx[i] for i in chosen], iteration)
        previous_best = min((h["best_size"] for h in history if h["best_size"] is not None),
                            default=None)
        improved = info["smallest_passing"] is not None and (
            previous_best is None or info["smallest_passing"] < previous_best)
        stall = 0 if improved else stall + 1
        if not children:
            stop_reason = "every child of the parents has been simulated"
        elif stall >= settings.patience:
            stop_reason = f"no smaller passing candidate in {settings.patience} iteration(s)"
        if info["simulated"]:
            surrogate.fit(archive.x, archive.y, settings.epochs, settings.learning_rate,
                          settings.seed + iteration)
        history.append({"iteration": iteration, **info, "best_size": best_size(),
                        "children": len(children), "screened": screened_n, "explored": explored,
                        "bound_log10": bound,
                        "seconds": time.perf_counter() - it_started})
        log(_line(history[-1]))
        save()
    save()

    order = archive.ranking()
    ranked = [i for i in order if archive.passed[i]]
    scores = evaluator.evaluate([full_mask(archive.x[i]) for i in ranked[:10]])
    return DeePMRResult(ranked=scores, history=history, n_simulated=len(archive),
                        stop_reason=stop_reason, resumed_from=resumed)


def _line(h: dict[str, Any]) -> str:
    screened = ("" if h.get("screened") is None
                else f", {h['screened']} of {h['children']} children screened in")
    if h.get("explored"):
        screened += f" + {h['explored']} best-rated explored"
    return (f"deepmr iteration {h['iteration']}: {h['simulated']} simulated, {h['passed']} passed"
            f"{screened}; smallest passing so far {h['best_size']} species ({h['seconds']:.1f} s)")
