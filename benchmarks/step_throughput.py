"""Surrogate step vs Cantera per core, on the cells of real flames: cells/s and the ratio of one run.

    python benchmarks/step_throughput.py                      # shipped h2-air + random sizes, 1 core
    python benchmarks/step_throughput.py --cores 2            # torch on 2 threads, Cantera on 2 processes
    python benchmarks/step_throughput.py --sizes --mixes premixed-phi1 premixed-phi1-5atm
    python benchmarks/step_throughput.py --device cuda --cells 65536 1048576 --dtypes float32 tf32 bfloat16
    python benchmarks/step_throughput.py --mechanism gri30.yaml --fuel CH4:1 --sizes 3200-1600-800-400
    python benchmarks/step_throughput.py --mechanism gri30.yaml --fuel CH4:1 --dt 5e-6 --sizes 400-400-400
    python benchmarks/step_throughput.py --model routed.safetensors --sizes --router both

Per core, as a CFD user measures it: the surrogate (``Integrator.advance``: the input check, frozen
cells, Cantera fallback cells, both networks, the element projection, the enthalpy inversion) runs
torch on ``--cores`` threads; the baseline steps the same cells with Cantera on ``--cores``
processes, one reused reactor each (``ReactorStep(reuse=True)``: restarted per cell, the way a CFD
code steps cells), rtol 1e-6 / atol 1e-15 (``CFD_TOLERANCES``), by the model's dt. Cells below the
model's frozen temperature are skipped by both (a CFD code's ``Treact``): cold cells cost both
nothing, and only the other cells make up the baseline's time.

The mixes (``benchmarks/state_mixes.py``) are the cells of a uniform mesh (``--spacing-um``)
through Cantera flames, plus 0D autoignition states. The surrogate steps the mesh tiled to
``--cells`` cells (one call, as a CFD partition makes it); Cantera steps the mesh's cells once per
repeat. The two alternate, ``--repeat`` times; each keeps its best time and the ratio is of the two
bests, in wall time and in CPU time (CPU seconds of every thread and process involved: on a busy
machine the steadier figure; on a quiet one the two agree for one core). The shares of the mix
(frozen, Cantera fallback, network, and the near-equilibrium network's share) are printed beside
each figure, with the machine's load average before and after.

Models: the one named by ``--model`` (shipped ``h2-air`` by default), then random-weight networks
of each of ``--sizes`` (``kinetics.model.synthetic``) on its mechanism (or ``--mechanism``'s) with its
frozen temperature and a domain that takes every other cell (no fallback, one network): what a
model that serves the whole flame would cost at that size. A model with a router (``deepkin
router``) runs as it is set (``--router on``, on where bfloat16 multiplies natively), without it
(``off``: ``skip_main_below`` 0, the main network on every cell), or both, each against Cantera
in the same run (``both``).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.state_mixes import MIXES, SPACING_M, StateMix, build_mix  # noqa: E402
from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.model_file import read_model_file  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from kinetics.model.synthetic import write_random_model  # noqa: E402
from mechanisms.loading import load_mechanism, solution_from_yaml  # noqa: E402
from mechanisms.reactor import CFD_TOLERANCES, ReactorStep  # noqa: E402
from mechanisms.state import temperature  # noqa: E402

DEFAULT_SIZES = ["64-64-64", "128-128-128", "256-256-256", "400-400-400", "1600-800-400"]
DEFAULT_MIXES = ["premixed-phi1", "premixed-phi0.5", "premixed-phi2.5", "counterflow", "autoignition"]

_worker_stepper: ReactorStep | None = None  # one reused reactor per Cantera worker process


def _start_worker(yaml_text: str, phase: str, sha256: str, dt_s: float) -> None:
    global _worker_stepper
    _worker_stepper = ReactorStep(solution_from_yaml(yaml_text, phase, sha256), dt_s,
                                  CFD_TOLERANCES, reuse=True)


def _step_cells(cells: np.ndarray) -> float:
    """Step ``cells`` ``[m, 2+ns]`` with this process's reused reactor; the CPU seconds it took."""
    start = time.process_time()
    _worker_stepper.advance_all(cells)
    return time.process_time() - start


@dataclass(frozen=True)
class Cost:
    """What one pass over a batch took: wall seconds, and CPU seconds of every process and thread
    that worked on it (on a busy machine CPU time is the steadier measure of a core's work)."""

    wall_s: float
    cpu_s: float

    def best(self, other: Cost) -> Cost:
        return Cost(min(self.wall_s, other.wall_s), min(self.cpu_s, other.cpu_s))


class CanteraCores:
    """Cantera on ``cores`` processes, one reused reactor each, CFD tolerances, steps of ``dt_s``."""

    def __init__(self, yaml_text: str, phase: str, sha256: str, dt_s: float, cores: int):
        self.cores = cores
        args = (yaml_text, phase, sha256, dt_s)
        if cores == 1:
            _start_worker(*args)
            self.pool = None
        else:
            self.pool = ProcessPoolExecutor(cores, multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=args)

    def cost(self, cells: np.ndarray) -> Cost:
        """Stepping ``cells`` ``[m, 2+ns]``, shared evenly among the processes."""
        start = time.perf_counter()
        if self.pool is None:
            cpu = _step_cells(cells)
        else:
            cpu = sum(self.pool.map(_step_cells, [cells[i::self.cores] for i in range(self.cores)]))
        return Cost(time.perf_counter() - start, cpu)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def surrogate_cost(integrator: Integrator, cells: np.ndarray | torch.Tensor) -> Cost:
    """One ``advance`` of ``cells`` (the GPU synchronised)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    integrator.advance(cells)
    if integrator.device.type == "cuda":
        torch.cuda.synchronize()
    return Cost(time.perf_counter() - start, time.process_time() - start_cpu)


def best_of_alternating(first: Callable[[], Cost], second: Callable[[], Cost], repeat: int
                        ) -> tuple[Cost, Cost]:
    """Best costs of ``first`` and ``second``, called in turn ``repeat`` times after one warm-up
    call each."""
    first(), second()
    best = [Cost(math.inf, math.inf), Cost(math.inf, math.inf)]
    for _ in range(repeat):
        best = [best[0].best(first()), best[1].best(second())]
    return best[0], best[1]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_text() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="h2-air", help="a trained model (name or path); its "
                        "mechanism, fuel, dt and frozen temperature serve the random networks too")
    parser.add_argument("--sizes", nargs="*", default=DEFAULT_SIZES,
                        help="hidden layers of random-weight networks, e.g. 256-256-256 (none: "
                        "the model alone)")
    parser.add_argument("--mixes", nargs="+", default=DEFAULT_MIXES, choices=list(MIXES))
    parser.add_argument("--cores", type=int, default=1,
                        help="torch threads of the surrogate = Cantera processes")
    parser.add_argument("--cells", type=int, nargs="+", default=[65536],
                        help="cells per surrogate call (the mesh tiled)")
    parser.add_argument("--spacing-um", type=float, default=SPACING_M * 1e6,
                        help="cell size of the uniform mesh through the flames (µm)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["auto"],
                        help="network precision: auto (the model's own: bfloat16 for a model "
                             "validated in it on a CPU that multiplies it natively, else float32), "
                             "float32, tf32, bfloat16")
    parser.add_argument("--mechanism", help="random networks on this mechanism instead (no "
                        "trained model; the model's dt and frozen temperature); needs --fuel")
    parser.add_argument("--fuel", help="with --mechanism: the fuel of the mixes, e.g. CH4:1")
    parser.add_argument("--dt", type=float, help="with --mechanism: the random networks' and "
                        "Cantera's step (s; default the model's dt)")
    parser.add_argument("--router", choices=["on", "off", "both"], default="on",
                        help="a model with a router: as set (on), without it (off), or both")
    args = parser.parse_args()
    if args.mechanism and not args.fuel:
        parser.error("--mechanism needs --fuel")
    if args.dt is not None and not (args.mechanism and args.dt > 0):
        parser.error("--dt needs --mechanism and a value > 0")
    torch.set_num_threads(args.cores)
    path = resolve_model(args.model)
    meta, _, yaml_text = read_model_file(path)
    if args.mechanism:
        mech = load_mechanism(args.mechanism)
        source, yaml_text, phase, sha256 = args.mechanism, mech.yaml_text, mech.phase, mech.sha256
        fuel, trained = args.fuel, []
    else:
        source, phase, sha256 = meta.mechanism_source, meta.phase, meta.mechanism_sha256
        fuel, trained = meta.training.get("fuel") or "H2:1", [(meta.name, path)]
    gas = solution_from_yaml(yaml_text, phase, sha256)
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; per core: torch "
          f"on {args.cores} thread(s) vs Cantera on {args.cores} process(es), one reused reactor "
          f"each, rtol {CFD_TOLERANCES.rtol:g}; {load_text()}")
    mixes = [build_mix(name, gas, fuel, args.spacing_um * 1e-6) for name in args.mixes]
    for mix in mixes:
        print(f"  {mix.name}: {mix.description}, {len(mix.states)} cells")
    dt_s = args.dt or meta.dt_s
    cantera = CanteraCores(yaml_text, phase, sha256, dt_s, args.cores)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            models = trained + [
                (f"random {size}", write_random_model(
                    Path(tmp) / f"{size}.safetensors", source,
                    hidden=[int(h) for h in size.split("-")], dt_s=dt_s,
                    frozen_temperature_k=meta.frozen_temperature_k))
                for size in args.sizes]
            for label, model_path in models:
                for precision in args.dtypes:
                    integrator = Integrator.load(model_path, device=args.device,
                                                 dtype=_network_dtype(precision))
                    name = integrator.precision if precision == "auto" else precision
                    skip = integrator.skip_main_below
                    if not skip:  # no router, or off on this device: measured as it is
                        _measure(label, integrator, name, mixes, cantera, args)
                        continue
                    for router in (["on", "off"] if args.router == "both" else [args.router]):
                        integrator.skip_main_below = skip if router == "on" else 0.0
                        _measure(f"{label} router {router}", integrator, name, mixes, cantera,
                                 args)
    finally:
        cantera.close()
    print(load_text())


def _network_dtype(precision: str) -> torch.dtype | str:
    """What ``Integrator.load`` takes for a ``--dtypes`` entry (tf32: float32 with TF32 GPU
    matmuls; auto: the model's own choice)."""
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    return "float32" if precision == "tf32" else precision


def _measure(label: str, integrator: Integrator, precision: str, mixes: list[StateMix],
             cantera: CanteraCores, args) -> None:
    """One line per (mix, cell count): the surrogate's and Cantera's cells/s per core, the ratio
    (wall time, and CPU time) and the shares of the mix."""
    for mix in mixes:
        hot = mix.states[temperature(mix.states) >= integrator.meta.frozen_temperature_k]
        for n in args.cells:
            cells = np.resize(mix.states, (n, mix.states.shape[1]))  # the mesh, tiled
            batch = cells if integrator.device.type == "cpu" else torch.as_tensor(
                cells, device=integrator.device)
            ours, theirs = best_of_alternating(lambda b=batch: surrogate_cost(integrator, b),
                                               lambda h=hot: cantera.cost(h), args.repeat)
            wall = (n / ours.wall_s / args.cores, len(mix.states) / theirs.wall_s / args.cores)
            cpu = (n / ours.cpu_s, len(mix.states) / theirs.cpu_s)
            res = integrator.advance(cells)
            network = 1.0 - (res.n_frozen + res.n_fallback) / n
            print(f"{label:<22} {precision:<8} {mix.name:<18} {n:>7} cells | wall: surrogate "
                  f"{wall[0]:>9,.0f}, Cantera {wall[1]:>7,.0f} cells/s/core: {wall[0] / wall[1]:5.1f}x"
                  f" | CPU time: {cpu[0]:>9,.0f} vs {cpu[1]:>7,.0f} cells/s: {cpu[0] / cpu[1]:5.1f}x"
                  f" | frozen {res.n_frozen / n:.1%}, fallback {res.n_fallback / n:.1%}, network "
                  f"{network:.1%} (near-eq. {res.n_tail_steps / n:.1%}) | {load_text()}", flush=True)


if __name__ == "__main__":
    main()
