"""Per-call time of one chemistry step, before and after the compiled step, in one run.

    python benchmarks/call_overhead.py                          # h2-air-flame and ch4-air
    python benchmarks/call_overhead.py --models ch4-air --cells 1 36 --repeat 20
    python benchmarks/call_overhead.py --baseline-rev <commit>  # another "before"

"Before" is the Python engine of ``--baseline-rev`` (the commit before the compiled step):
its ``kinetics/integrator.py`` and ``kinetics/inference.py`` read with ``git show`` and loaded as
modules beside the current package. "After" is ``Integrator.advance`` now (the compiled step and
its orchestration), and the compiled module's own ``advance`` (what the C library calls). Both
load the shipped model at its own precision (``auto``) on the CPU, torch on one thread.

The cells are those of real flames (``benchmarks/state_mixes.py``: a premixed flame on a 20 µm
mesh and 0D autoignition states) that the model steps with its networks (frozen and Cantera
fallback cells left out: their cost is Cantera's, the same before and after), evenly spaced
through the mix for small counts and the mix tiled for large ones. Each count is timed
alternately before and after, ``--repeat`` times; each keeps its best, and the line gives the
per-call times (wall, ms) and their ratio, with the machine's load average (the machine may be
shared: a loaded one makes both slower and the ratio the steadier figure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.state_mixes import build_mix  # noqa: E402
from benchmarks.step_throughput import cpu_name, load_text  # noqa: E402
from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model_file import read_model_file  # noqa: E402
from kinetics.registry import resolve_model  # noqa: E402
from mechanisms.loading import solution_from_yaml  # noqa: E402
from mechanisms.state import temperature  # noqa: E402

# The last commit whose Integrator ran its arithmetic in Python, tensor operation by operation.
BASELINE_REV = "3b0ed81d6f447f9932391af790442a705c5211e0"
DEFAULT_MODELS = ["h2-air-flame", "ch4-air"]
DEFAULT_CELLS = [1, 36, 1000, 65536]
MIXES = ["premixed-phi1", "autoignition"]


def legacy_integrator(rev: str = BASELINE_REV) -> types.ModuleType:
    """The ``kinetics.integrator`` module of commit ``rev`` (with that commit's
    ``kinetics/inference.py``), loaded from git beside the current package; its other imports
    are the current package's (unchanged since). RuntimeError when git cannot show them."""
    def source(path: str) -> str:
        run = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise RuntimeError(f"git show {rev}:{path}: {run.stderr.strip()}")
        return run.stdout

    tag = rev[:12]
    inference = types.ModuleType(f"_legacy_inference_{tag}")
    sys.modules[inference.__name__] = inference
    exec(compile(source("kinetics/inference.py"), f"{rev}:kinetics/inference.py", "exec"),
         inference.__dict__)
    code = source("kinetics/integrator.py").replace("from kinetics.inference import",
                                                   f"from {inference.__name__} import")
    module = types.ModuleType(f"_legacy_integrator_{tag}")
    sys.modules[module.__name__] = module
    exec(compile(code, f"{rev}:kinetics/integrator.py", "exec"), module.__dict__)
    return module


def network_cells(model: str, legacy: types.ModuleType) -> np.ndarray:
    """The cells ``[m, 2+ns]`` of the mixes that ``model``'s networks step (by the baseline)."""
    path = resolve_model(model)
    meta, _, yaml_text = read_model_file(path)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    fuel = meta.training.get("fuel") or "H2:1"
    states = np.concatenate([build_mix(name, gas, fuel).states for name in MIXES])
    states = states[temperature(states) >= meta.frozen_temperature_k]
    result = legacy.Integrator.load(path, device="cpu").advance(states)
    return states[~result.fallback]


def batch(cells: np.ndarray, n: int) -> np.ndarray:
    """``n`` cells: evenly spaced through ``cells`` when fewer, else ``cells`` tiled."""
    if n <= len(cells):
        return np.ascontiguousarray(cells[np.linspace(0, len(cells) - 1, n).round().astype(int)])
    return np.resize(cells, (n, cells.shape[1]))


def best_per_call(calls: list[Callable[[], object]], repeat: int, budget_s: float) -> list[float]:
    """Best seconds per call of each of ``calls``, timed in turn ``repeat`` times (each time as
    many calls as fit in ``budget_s``) after one warm-up call each."""
    for call in calls:
        call()
    best = [float("inf")] * len(calls)
    for _ in range(repeat):
        for i, call in enumerate(calls):
            start, k = time.perf_counter(), 0
            while True:
                call()
                k += 1
                elapsed = time.perf_counter() - start
                if elapsed >= budget_s:
                    break
            best[i] = min(best[i], elapsed / k)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--cells", type=int, nargs="+", default=DEFAULT_CELLS)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--budget-ms", type=float, default=20.0,
                        help="time per measurement (at least one call)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    torch.set_num_threads(1)
    legacy = legacy_integrator(args.baseline_rev)
    print(f"{cpu_name()}, torch {torch.__version__} on 1 thread; before: {args.baseline_rev[:12]}; "
          f"{load_text()}")
    for model in args.models:
        path = resolve_model(model)
        before = legacy.Integrator.load(path, device="cpu")
        after = Integrator.load(path, device="cpu")
        module = after.step_module
        cells = network_cells(model, legacy)
        print(f"{model} ({after.precision} networks): {len(cells)} network cells of {', '.join(MIXES)}")
        for n in args.cells:
            states = batch(cells, n)
            x = torch.from_numpy(states)
            old, new, raw = best_per_call(
                [lambda s=states, b=before: b.advance(s), lambda s=states, a=after: a.advance(s),
                 lambda s=x, m=module: m.advance(s, 1, None, True)],
                args.repeat, args.budget_ms / 1000)
            print(f"  {n:>6} cells: before {old * 1e3:8.3f} ms, after {new * 1e3:8.3f} ms "
                  f"(compiled module alone {raw * 1e3:8.3f} ms): {old / new:5.2f}x | {load_text()}",
                  flush=True)


if __name__ == "__main__":
    main()
