"""Per-call time of one chemistry step, before and after the compiled step, in one run.

    python benchmarks/call_overhead.py                          # h2-air-flame and ch4-air
    python benchmarks/call_overhead.py --models ch4-air --cells 1 36 --repeat 20
    python benchmarks/call_overhead.py --baseline-rev <commit>  # another "before"
    python benchmarks/call_overhead.py --device cuda            # the C library: GPU against CPU

"Before" is the Python engine of ``--baseline-rev`` (the commit before the compiled step):
its ``kinetics/integrator.py`` and ``kinetics/inference.py`` read with ``git show`` and loaded as
modules beside the current package. "After" is ``Integrator.advance`` now (the compiled step and
its orchestration), the compiled module's own ``advance``, and the C client library's
in-process path (``couplers/c`` built here as one shared library against the wheel's libtorch
and called through ctypes, ~1 µs a call: ``deepkin_step`` on the model's ``deepkin export``,
what a C, C++ or Fortran solver calls; checked to return the compiled module's bits). All load
the shipped model at its own precision (``auto``) on the CPU, torch on one thread (the library
shares the process's libtorch, so its threads too).

``--device cuda`` times the C library's in-process path only: the model exported for the CPU and
for CUDA (``deepkin export --device``; ``--exported DIR`` takes ``DIR/MODEL.cpu.pt`` and
``DIR/MODEL.cuda.pt`` written so, else the script exports them, float32), the CPU file on 1
thread and on ``--cpu-threads`` (default: every core), the CUDA file driven from 1 thread (its
cells copied to the GPU and back each call), with the ratios and the largest |ΔT| between them.

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
import ctypes
import os
import subprocess
import sys
import tempfile
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
from kinetics import export_model  # noqa: E402
from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.model_file import read_model_file  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from mechanisms.loading import solution_from_yaml  # noqa: E402
from mechanisms.state import temperature  # noqa: E402

# The last commit whose Integrator ran its arithmetic in Python, tensor operation by operation.
BASELINE_REV = "3b0ed81d6f447f9932391af790442a705c5211e0"
DEFAULT_MODELS = ["h2-air-flame", "ch4-air"]
DEFAULT_CELLS = [1, 36, 1000, 65536]
MIXES = ["premixed-phi1", "autoignition"]


# The modules the baseline imports, where they live since kinetics/ was split by job.
MOVED = {"kinetics.domain": "kinetics.model.domain", "kinetics.model_checks": "kinetics.model.model_file",
         "kinetics.model_file": "kinetics.model.model_file",
         "kinetics.models": "kinetics.networks.architectures", "kinetics.thermo": "kinetics.step.thermo",
         "kinetics.transforms": "kinetics.networks.transforms"}


def moved(code: str) -> str:
    """``code`` with its imports of the modules in :data:`MOVED` pointed at their homes now."""
    for old, new in MOVED.items():
        code = code.replace(f"from {old} import", f"from {new} import")
    return code


def legacy_integrator(rev: str = BASELINE_REV) -> types.ModuleType:
    """The ``kinetics.integrator`` module of commit ``rev`` (with that commit's
    ``kinetics/inference.py``), loaded from git beside the current package; its other imports
    are the current package's (unchanged since, moved by :data:`MOVED`). RuntimeError when git
    cannot show them."""
    def source(path: str) -> str:
        run = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise RuntimeError(f"git show {rev}:{path}: {run.stderr.strip()}")
        return run.stdout

    tag = rev[:12]
    inference = types.ModuleType(f"_legacy_inference_{tag}")
    sys.modules[inference.__name__] = inference
    exec(compile(moved(source("kinetics/inference.py")), f"{rev}:kinetics/inference.py", "exec"),
         inference.__dict__)
    code = moved(source("kinetics/integrator.py")).replace("from kinetics.inference import",
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


def build_client_library(folder: Path, cuda: bool = False) -> Path:
    """``couplers/c`` built in ``folder`` as one shared library with its in-process backend,
    against the libtorch of this torch wheel (and its CUDA libraries when ``cuda``); its path.
    RuntimeError (one line, then the compiler's last lines) when it cannot be built."""
    torch_dir, c_dir = Path(torch.__file__).parent, ROOT / "couplers" / "c"
    lib = torch_dir / "lib"
    if not (torch_dir / "include" / "torch" / "script.h").is_file():
        raise RuntimeError(f"torch {torch.__version__} ships no C++ headers: no C library to time")
    cuda_libs = []
    if cuda:
        if not (lib / "libtorch_cuda.so").is_file():
            raise RuntimeError(f"torch {torch.__version__} has no libtorch_cuda.so (a CPU-only "
                               "wheel): no CUDA build of the C library")
        cuda_libs = ["-ltorch_cuda", "-lc10_cuda"]
    cc, cxx = os.environ.get("CC", "cc"), os.environ.get("CXX", "c++")
    include = torch_dir / "include"
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    out = folder / "libdeepkin_client.so"
    for command in (
            [cxx, "-std=c++20", "-O2", "-fPIC", abi, "-I", c_dir, "-I", include,
             "-I", include / "torch/csrc/api/include", "-c", c_dir / "deepkin_local.cpp", "-o", "local.o"],
            [cc, "-std=c99", "-O2", "-fPIC", "-DDEEPKIN_WITH_LIBTORCH", "-I", c_dir, "-c",
             c_dir / "deepkin_client.c", "-o", "client.o"],
            [cxx, "-shared", "client.o", "local.o", "-o", out, f"-L{lib}", f"-Wl,-rpath,{lib}",
             "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", *cuda_libs, "-lc10", "-lcurl", "-lm"]):
        run = subprocess.run([str(a) for a in command], cwd=folder, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"building the C library failed: {command[0]} ... {command[-1]}\n"
                               + run.stderr[-3000:])
    return out


class CLibraryStep:
    """One ``deepkin_client`` handle on a model file of ``deepkin export`` (in-process)."""

    def __init__(self, lib: ctypes.CDLL, model_file: Path):
        self.lib, self.handle = lib, ctypes.c_void_p()
        rc = lib.deepkin_open(str(model_file).encode(), None, None, None, 30.0,
                              ctypes.byref(self.handle))
        if rc != 0:
            why = self.errmsg()
            lib.deepkin_close(self.handle)
            raise RuntimeError(f"deepkin_open: status {rc}: {why}")

    def errmsg(self) -> str:
        buf = ctypes.create_string_buffer(1024)
        self.lib.deepkin_errmsg(self.handle, buf, len(buf))
        return buf.value.decode()

    def stepper(self, states: np.ndarray) -> tuple[Callable[[], None], np.ndarray]:
        """A call advancing ``states`` ([n, 2+ns] float64, C order) by the model's dt, and the
        array it writes the answer to. The call raises RuntimeError on a failed step."""
        assert states.dtype == np.float64 and states.flags.c_contiguous
        out = np.empty_like(states)
        handle, n = self.handle, len(states)
        src, dst = states.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)
        step = self.lib.deepkin_step

        def call() -> None:
            if step(handle, n, src, 0.0, dst) != 0:
                raise RuntimeError(f"deepkin_step: {self.errmsg()}")
        return call, out

    def close(self) -> None:
        self.lib.deepkin_close(self.handle)


def load_client_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.deepkin_open.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_double, ctypes.POINTER(ctypes.c_void_p)]
    lib.deepkin_step.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_double,
                                 ctypes.c_void_p]
    lib.deepkin_errmsg.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.deepkin_close.argtypes = [ctypes.c_void_p]
    return lib


def cpu_figures(args: argparse.Namespace, legacy: types.ModuleType, lib: ctypes.CDLL,
                folder: Path) -> None:
    """Before (the Python engine), after (``Integrator.advance``, the compiled module alone, the
    C library in-process), per model and cell count, on the CPU."""
    for model in args.models:
        path = resolve_model(model)
        before = legacy.Integrator.load(path, device="cpu")
        after = Integrator.load(path, device="cpu")
        small = (Integrator.load(path, device="cpu", small_calls="aot") if args.aot else None)
        module = after.step_module
        library = CLibraryStep(lib, export_model(path, folder / f"{model}.cpu.pt",
                                                 precision=after.precision, device="cpu"))
        cells = network_cells(model, legacy)
        print(f"{model} ({after.precision} networks): {len(cells)} network cells of {', '.join(MIXES)}")
        for n in args.cells:
            states = batch(cells, n)
            x = torch.from_numpy(states)
            in_c, c_out = library.stepper(states)
            in_c()
            if not np.array_equal(c_out, module.forward(x, 1)[0].numpy()):
                raise RuntimeError(f"{model}, {n} cells: the C library's step is not the compiled "
                                   "module's (same file, same bits expected)")
            calls = [lambda s=states, b=before: b.advance(s), lambda s=states, a=after: a.advance(s),
                     lambda s=x, m=module: m.advance(s, 1, None, True), in_c]
            if small is not None and n <= small.small_call_max_cells:
                calls.append(lambda s=states, a=small: a.advance(s))
            old, new, raw, c, *aot = best_per_call(calls, args.repeat, args.budget_ms / 1000)
            aot_text = (f"; small calls ahead of time {aot[0] * 1e3:8.3f} ms: {old / aot[0]:5.2f}x"
                        if aot else "")
            print(f"  {n:>6} cells: before {old * 1e3:8.3f} ms, after {new * 1e3:8.3f} ms "
                  f"(compiled module alone {raw * 1e3:8.3f} ms, C library in-process {c * 1e3:8.3f} ms): "
                  f"{old / new:5.2f}x, C {old / c:5.2f}x{aot_text} | {load_text()}", flush=True)
        library.close()


def cuda_figures(args: argparse.Namespace, legacy: types.ModuleType, lib: ctypes.CDLL,
                 folder: Path) -> None:
    """The C library in-process: the model's CUDA export against its CPU export (1 thread and
    ``args.cpu_threads``), per model and cell count."""
    for model in args.models:
        files = {}
        for device in ("cpu", "cuda"):
            files[device] = (Path(args.exported) if args.exported else folder) / f"{model}.{device}.pt"
            if not args.exported:
                export_model(resolve_model(model), files[device], precision="float32", device=device)
            elif not files[device].is_file():
                raise RuntimeError(f"{files[device]} does not exist: write it with `deepkin export "
                                   f"{model} -o {files[device]} --device {device}`")
        on_cpu, on_gpu = CLibraryStep(lib, files["cpu"]), CLibraryStep(lib, files["cuda"])
        cells = network_cells(model, legacy)
        print(f"{model} (float32 networks; {files['cpu'].name}, {files['cuda'].name}): {len(cells)} "
              f"network cells of {', '.join(MIXES)}")
        for n in args.cells:
            states = batch(cells, n)
            cpu_call, cpu_out = on_cpu.stepper(states)
            gpu_call, gpu_out = on_gpu.stepper(states)
            # The CPU on 1 thread alternated with the GPU (driven from 1 thread); then on many
            # threads alone: changing libtorch's threads between calls costs more than a call.
            one, gpu = best_per_call([cpu_call, gpu_call], args.repeat, args.budget_ms / 1000)
            torch.set_num_threads(args.cpu_threads)
            (many,) = best_per_call([cpu_call], args.repeat, args.budget_ms / 1000)
            torch.set_num_threads(1)
            dt_k = float(np.abs(gpu_out[:, 0] - cpu_out[:, 0]).max())
            print(f"  {n:>6} cells: CPU 1 thread {one * 1e3:9.3f} ms, CPU {args.cpu_threads} threads "
                  f"{many * 1e3:9.3f} ms, CUDA {gpu * 1e3:9.3f} ms: CUDA {one / gpu:7.2f}x 1 thread, "
                  f"{many / gpu:6.2f}x {args.cpu_threads} threads; max |dT| CUDA-CPU {dt_k:.1e} K | "
                  f"{load_text()}", flush=True)
        on_cpu.close()
        on_gpu.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--cells", type=int, nargs="+", default=DEFAULT_CELLS)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--budget-ms", type=float, default=20.0,
                        help="time per measurement (at least one call)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--aot", action="store_true",
                        help="also Integrator.load(small_calls='aot') up to its cut-over (compiled "
                             "on the first run into the AOTInductor cache: about a minute a model)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the C library's in-process step on the GPU against the CPU")
    parser.add_argument("--exported", metavar="DIR",
                        help="with --device cuda: DIR/MODEL.cpu.pt and DIR/MODEL.cuda.pt of "
                             "`deepkin export --device` (else exported here)")
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1,
                        help="with --device cuda: the CPU path's threads beside 1")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if args.exported and args.device != "cuda":
        parser.error("--exported goes with --device cuda (the CPU figures export at the "
                     "Integrator's own precision)")
    if args.cpu_threads < 1:
        parser.error(f"--cpu-threads must be >= 1, got {args.cpu_threads}")
    torch.set_num_threads(1)
    legacy = legacy_integrator(args.baseline_rev)
    device = (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
    print(f"{cpu_name()}{device}, torch {torch.__version__} on 1 thread; "
          f"before: {args.baseline_rev[:12]}; {load_text()}")
    with tempfile.TemporaryDirectory(prefix="deepkin-call-overhead-") as tmp:
        try:
            lib = load_client_library(build_client_library(Path(tmp), cuda=args.device == "cuda"))
        except RuntimeError as e:
            sys.exit(f"error: {e}")
        (cuda_figures if args.device == "cuda" else cpu_figures)(args, legacy, lib, Path(tmp))


if __name__ == "__main__":
    main()
