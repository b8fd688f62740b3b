"""What an AOTInductor-compiled step would buy at a few cells per call, against TorchScript, in one run.

    python benchmarks/aot_small_calls.py                       # ch4-air, 1, 3, 36 and 1,000 cells
    python benchmarks/aot_small_calls.py --model h2-air-flame --cells 1 8

The shipped step (:mod:`kinetics.step.compiled_step`) is TorchScript: at a few cells a call is
~130 tensor operations of about a microsecond each plus ~15-30 µs per oneDNN layer call, so one
cell costs ~0.3-0.6 ms whatever the arithmetic (docs/training.md, "The compiled step"). AOTInductor
(``torch.export`` + ``torch._inductor.aoti_compile_and_package``, loadable from C++ by libtorch's
``AOTIModelPackageLoader``) fuses the elementwise work into a few generated C++ loops. This script
times both runtimes on **the same function**: a step of the model's shape, not the model's step —
the model's main network (its weights, feature and target scaling, signed-power output), the
Box-Cox features, ``Y' = BCT⁻¹(BCT(Y) + dt·rate)`` by repeated squaring, the renormalisation and
4 Newton iterations for T' on the mechanism's mixture polynomials (first interval only), with no
routing, element projection, domain check or convergence test: the control flow ``torch.export``
needs rewritten (``torch.cond``, fixed iteration counts) is left out, so the figure is what the
runtime costs, not a finished step. Cells are the model's own fresh mixtures at 1,500 K (the
arithmetic's cost does not depend on the values).

Each count is timed on one thread, alternately, CPU time of the calling thread (the machine may
be shared), best of ``--repeat``; the ratio is TorchScript over AOTInductor. The first run
compiles (about a minute on one core; a C++ compiler is needed) into ``--workdir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.step_throughput import cpu_name, load_text  # noqa: E402
from kinetics.model.model_file import FEATURE_NORMS, TARGET_NORMS, WEIGHTS, network_state, read_model_file  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from kinetics.networks.architectures import build_model  # noqa: E402
from kinetics.step.tables import thermo_table  # noqa: E402
from mechanisms.loading import solution_from_yaml  # noqa: E402
from mechanisms.state import ONE_ATM_PA  # noqa: E402

NEWTON_ITERATIONS = 4


class ShapedStep(nn.Module):
    """The step-shaped function both runtimes run (see the module's docstring): states
    ``[n, 2+ns]`` float64 (T in K, P in Pa, Y) → states after one model step."""

    def __init__(self, model: Path):
        super().__init__()
        meta, tensors, yaml_text = read_model_file(model)
        gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
        self.net = build_model(meta.architecture)
        self.net.load_state_dict(network_state(tensors, WEIGHTS))
        self.net.eval().requires_grad_(False)
        f64 = torch.float64
        for name, key in zip(("x_mean", "x_std", "y_mean", "y_std"), FEATURE_NORMS + TARGET_NORMS):
            self.register_buffer(name, tensors[key].to(f64))
        _, table = thermo_table(gas, torch.device("cpu"))
        self.register_buffer("poly", table[:, :12].contiguous())  # interval 0: h then cp
        self.lam, self.dt_s = float(meta.box_cox_lambda), float(meta.dt_s)
        self.ns = meta.n_species
        self.one_atm_pa = float(ONE_ATM_PA)
        self.newton_iterations = NEWTON_ITERATIONS  # TorchScript reads no module globals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, p, y = x[:, 0:1], x[:, 1:2], x[:, 2:]
        bct = (torch.clamp(y, min=0.0) ** self.lam - 1.0) / self.lam
        features = torch.cat([t, torch.log(p / self.one_atm_pa), bct], dim=1)
        u = self.net(((features - self.x_mean) / self.x_std).float()).double()
        rate = u * u.abs() * (self.y_std * 0.25) + self.y_mean
        base = torch.clamp(self.lam * (bct + self.dt_s * rate) + 1.0, min=0.0)
        y_new = base ** (1.0 / self.lam)
        y_new = y_new / y_new.sum(dim=1, keepdim=True)
        c_old, c_new = y @ self.poly, y_new @ self.poly
        h = _horner(c_old, 0, t)
        t_new = t
        for _ in range(self.newton_iterations):
            g = h - _horner(c_new, 0, t_new)
            t_new = t_new + g / _horner(c_new, 6, t_new)
        return torch.cat([t_new, p, y_new], dim=1)


def _horner(c: torch.Tensor, at: int, t: torch.Tensor) -> torch.Tensor:
    """``c[:, at] + c[:, at+1]·t + … + c[:, at+5]·t⁵`` ``[n, 1]``."""
    value = c[:, at + 5:at + 6]
    for k in range(at + 4, at - 1, -1):
        value = value * t + c[:, k:k + 1]
    return value


def cells(model: Path, n: int) -> torch.Tensor:
    """``n`` copies of the model's fresh stoichiometric mixture at 1,500 K and 1 atm."""
    meta, _, yaml_text = read_model_file(model)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    gas.set_equivalence_ratio(1.0, meta.training.get("fuel") or "H2:1",
                              meta.training.get("oxidizer") or "O2:1,N2:3.76")
    gas.TP = 1500.0, ONE_ATM_PA
    row = torch.cat([torch.tensor([1500.0, ONE_ATM_PA], dtype=torch.float64),
                     torch.as_tensor(gas.Y, dtype=torch.float64)])
    return row.repeat(n, 1)


def best_cpu_us(call: Callable[[], object], repeat: int, budget_s: float = 0.25) -> float:
    """Best CPU time (µs) of the calling thread per call, over ``repeat`` rounds."""
    for _ in range(20):
        call()
    best = float("inf")
    for _ in range(repeat):
        start, k = time.thread_time(), 0
        while time.thread_time() - start < budget_s:
            call()
            k += 1
        best = min(best, (time.thread_time() - start) / k)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ch4-air", help="a model (name or path)")
    parser.add_argument("--cells", nargs="*", type=int, default=[1, 3, 36, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", help="where the compiled package goes (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = resolve_model(args.model)
    step = ShapedStep(model).eval()
    print(f"{args.model}: {step.ns} species; {cpu_name()}, 1 thread; torch {torch.__version__}; "
          f"{load_text()}", flush=True)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        scripted = torch.jit.script(step)
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        n_dim = torch.export.Dim("cells", min=1, max=1 << 20)
        exported = torch.export.export(step, (cells(model, 2),), dynamic_shapes=({0: n_dim},))
        package = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(folder / f"{model.stem}.shaped-step.pt2"))
        compiled = torch._inductor.aoti_load_package(package)
        print(f"AOTInductor compile: {time.perf_counter() - started:.0f} s", flush=True)
        for n in args.cells:
            x = cells(model, n)
            delta = float((compiled(x) - step(x)).abs().max())
            ts = best_cpu_us(lambda x=x: scripted(x), args.repeat)
            aot = best_cpu_us(lambda x=x: compiled(x), args.repeat)
            print(f"{n:>6} cells: TorchScript {ts:9.1f} us, AOTInductor {aot:9.1f} us: {ts / aot:5.2f}x "
                  f"(largest |difference| {delta:.1e}) | {load_text()}", flush=True)


if __name__ == "__main__":
    main()
