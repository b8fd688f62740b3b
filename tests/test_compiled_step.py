"""The compiled chemistry step (kinetics/step/compiled_step.py): the same steps as the Python engine it
replaced, on the shipped models and the states of real flames and ignitions; its enthalpy
inversion against NASA-7 (kinetics/step/thermo.py); its per-cell flags; and the TorchScript file
`deepkin export` writes, loaded back as a C++ caller would load it."""

from __future__ import annotations

import json

import cantera as ct
import numpy as np
import pytest
import torch

from benchmarks.call_overhead import BASELINE_REV, legacy_integrator
from benchmarks.state_mixes import autoignition, premixed
from kinetics.integrator import Integrator
from kinetics.model.model_file import WEIGHTS, non_network_tensors, read_model_file
from kinetics.model.registry import resolve_model
from kinetics.step.compiled_step import (
    FEW_CELLS,
    FLAG_FALLBACK,
    FLAG_FROZEN,
    FLAG_NETWORK,
    CompiledStep,
    quiet_jit,
    script_step,
)
from kinetics.step.thermo import Nasa7
from mechanisms.loading import solution_from_yaml
from tests.conftest import run_cli
from tests.helpers.step_cells import edge_cells

# How far the compiled step may lie from the Python engine it replaced (deepkin at BASELINE_REV):
# the networks and the routing are the same kernels in the same order (the same bits); the
# enthalpy inversion sums each cell's mixture polynomial instead of every species' and the
# projection solves by Cholesky instead of LU, which round differently. One change is on purpose:
# a network evaluates a lone row as two (kinetics/step/forward.py), where the old engine took a GEMV
# path that rounds as float32 does (~1e-7 of a rate): the baseline here has that change too.
T_BOUND_K = 1e-9  # seen: 5e-12 K after ten model steps
Y_BOUND = 1e-13  # absolute, seen: 4e-16
AIR = "O2:1,N2:3.76"


@pytest.fixture(scope="module")
def legacy():
    """The Python engine of BASELINE_REV, read from the repository's history, with lone network
    rows evaluated as two (as the compiled step does)."""
    try:
        module = legacy_integrator(BASELINE_REV)
    except RuntimeError as exc:
        pytest.skip(f"the baseline engine is not in this checkout's history ({exc})")
    forward = module.BlockedForward  # the baseline's own inference module's class
    block = forward._block

    def lone_row_as_two(self, h: torch.Tensor) -> torch.Tensor:
        return block(self, torch.cat([h, h]))[:1] if len(h) == 1 else block(self, h)

    forward._block = lone_row_as_two
    return module


def _cells(model: str) -> np.ndarray:
    """Real states for ``model``: its fuel's 0D ignition (solver steps through ignition) and,
    for hydrogen, a premixed flame on a 20 µm mesh (methane's takes 20 s: left out), plus three
    cells for the other paths: cold (frozen), at 1/100 of the trained pressure (outside the
    domain: Cantera) and below the trained temperature (outside, for hydrogen's 1176 K edge)."""
    meta, _, yaml_text = read_model_file(resolve_model(model))
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    fuel = meta.training["fuel"]
    parts = [autoignition(gas, fuel, n=400)]
    if fuel.startswith("H2"):
        parts.append(premixed(gas, fuel, 1.0, spacing_m=40e-6))
    return np.vstack(parts + [edge_cells(gas, fuel, parts[0], meta.pressure_pa[0])])


@pytest.mark.parametrize("model, precision", [("h2-air", "float32"), ("h2-air-flame", "float32"),
                                              ("h2-air-flame", "bfloat16"), ("ch4-air", "float32")])
@pytest.mark.parametrize("n_substeps", [1, 3])
def test_the_compiled_step_steps_as_the_python_engine_did(legacy, model, precision, n_substeps):
    path = resolve_model(model)
    states = _cells(model)
    before = legacy.Integrator.load(path, device="cpu", dtype=precision).advance(states, n_substeps)
    after = Integrator.load(path, device="cpu", dtype=precision).advance(states, n_substeps)
    assert np.array_equal(after.frozen, before.frozen) and after.n_frozen == before.n_frozen >= 1
    assert np.array_equal(after.fallback, before.fallback) and after.n_fallback >= 1
    assert (after.n_tail_steps, after.n_induction_steps, after.n_unresolved_steps) == \
        (before.n_tail_steps, before.n_induction_steps, before.n_unresolved_steps)
    assert np.array_equal(after.states[after.frozen], states[after.frozen])  # returned as given
    assert np.abs(after.states[:, 0] - before.states[:, 0]).max() <= T_BOUND_K
    assert np.abs(after.states[:, 2:] - before.states[:, 2:]).max() <= Y_BOUND
    assert np.array_equal(after.states[:, 1], states[:, 1])
    if model != "h2-air":  # the regime networks took some of these cells
        assert after.n_tail_steps + after.n_induction_steps > 0


@pytest.mark.parametrize("model", ["h2-air-flame", "ch4-air"])
def test_a_cells_step_does_not_depend_on_its_batch(model):
    """A cell stepped alone gets the step it gets in a batch: its network rows are the same bits
    (a lone row goes through the batch's GEMM, not a GEMV that rounds as float32 does), and the
    float64 products differ in the last bits at most; C callers stepping cell by cell and a CFD
    partition agree."""
    integrator = Integrator.load(resolve_model(model), device="cpu", dtype="float32")
    cells = _cells(model)[:-3]
    batch = integrator.advance(cells, 2)
    for i in range(0, len(cells), max(1, len(cells) // 40)):
        alone = integrator.advance(cells[i:i + 1], 2)
        assert abs(alone.states[0, 0] - batch.states[i, 0]) <= T_BOUND_K, i
        assert np.abs(alone.states[0, 2:] - batch.states[i, 2:]).max() <= Y_BOUND, i
    # the interruptible path (the service passes ``stop``) steps a lone cell the same way
    for i in (0, len(cells) // 2):
        stepwise = integrator.advance(cells[i:i + 1], 2, stop=lambda: False)
        assert abs(stepwise.states[0, 0] - batch.states[i, 0]) <= T_BOUND_K, i


def test_the_enthalpy_inversion_is_nasa7s_across_the_range_boundaries():
    """GRI-3.0 species change NASA-7 range at 1000, 1368, 1382 and 1478 K: fresh methane/air at
    600-1500 K burnt to equilibrium (Cantera, HP) inverts to the adiabatic flame temperature
    through every boundary, as Nasa7.temperature and Cantera have it."""
    meta, tensors, yaml_text = read_model_file(resolve_model("ch4-air"))
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    step = CompiledStep.from_model(meta, tensors, gas)
    fresh, burnt, t_old, t_flame = [], [], [], []
    for t0 in np.linspace(600.0, 1500.0, 7):
        for phi in (0.5, 0.8, 1.0, 1.3, 1.6):
            gas.set_equivalence_ratio(phi, "CH4:1", AIR)
            gas.TP = t0, ct.one_atm
            fresh.append(gas.Y.copy())
            t_old.append(t0)
            gas.equilibrate("HP")
            burnt.append(gas.Y.copy())
            t_flame.append(gas.T)
    y_old, y_new = torch.as_tensor(np.array(fresh)), torch.as_tensor(np.array(burnt))
    t_old, t_flame = (torch.tensor(v, dtype=torch.float64) for v in (t_old, t_flame))
    nasa = Nasa7(gas)
    expected, ok = nasa.temperature(nasa.enthalpy(t_old, y_old), y_new, t_old)
    assert bool(ok.all()) and float((t_flame - t_old).min()) > 700.0
    with torch.no_grad():
        got, converged = step.temperature(t_old, y_old, y_new)
    assert bool(converged.all())
    torch.testing.assert_close(got, expected, rtol=0.0, atol=T_BOUND_K)
    torch.testing.assert_close(got, t_flame, rtol=1e-6, atol=0.0)  # Cantera's own equilibrium
    # A few cells iterate on floats, cell by cell (scripted as the engine runs it): the same T'.
    scripted = script_step(step)
    for start in range(0, len(t_old), FEW_CELLS):
        cells = slice(start, start + FEW_CELLS)
        with torch.no_grad():
            few, few_converged = scripted.temperature(t_old[cells], y_old[cells], y_new[cells])
        assert bool(few_converged.all()) and few.dtype == torch.float64
        torch.testing.assert_close(few, got[cells], rtol=0.0, atol=T_BOUND_K)


def test_cells_come_back_flagged(legacy):
    """forward(): frozen and fallback cells come back as given (flags 1 and 2), the others
    stepped (flag 0); advance() holds a fallback cell where it needs the fallback."""
    integrator = Integrator.load(resolve_model("h2-air"), device="cpu", dtype="float32")
    cells = _cells("h2-air")[-4:]  # a flame cell, cold, thin, warm
    x = torch.as_tensor(cells)
    with torch.no_grad():
        out, flag = integrator.step_module(x, 2)
        held, held_flag, done, _ = integrator.step_module.advance(x, 2, None, True)
    assert flag.tolist() == [FLAG_NETWORK, FLAG_FROZEN, FLAG_FALLBACK, FLAG_FALLBACK]
    assert torch.equal(held_flag, flag) and done.tolist() == [2, 0, 0, 0]
    assert torch.equal(out[1:], x[1:]) and not torch.equal(out[0], x[0])
    assert torch.equal(out[0], held[0])
    assert float(out[0, 2:].sum()) == pytest.approx(1.0, abs=1e-12)
    # The engine gives those cells to Cantera: what the step before this module gave them.
    result = integrator.advance(cells, 2)
    assert result.fallback.tolist() == [False, False, True, True]
    before = legacy.Integrator.load(resolve_model("h2-air"), device="cpu").advance(cells, 2)
    np.testing.assert_allclose(result.states, before.states, rtol=0.0, atol=T_BOUND_K)


def test_an_exported_file_steps_as_the_integrator(tmp_path):
    """`deepkin export` writes one TorchScript file; torch.jit.load (as libtorch's
    torch::jit::load) gives back a module that steps cells exactly as the Integrator's."""
    out = tmp_path / "h2-air-flame.pt"
    proc = run_cli("export", "h2-air-flame", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "networks in float32" in proc.stdout
    extra = {"deepkin_model.json": ""}
    with quiet_jit():
        module = torch.jit.load(str(out), _extra_files=extra)
    record = json.loads(extra["deepkin_model.json"])
    integrator = Integrator.load(resolve_model("h2-air-flame"), device="cpu", dtype="float32")
    assert record["model"]["name"] == "h2-air-flame" and record["network_dtype"] == "float32"
    assert list(module.species) == integrator.species and module.dt_s == integrator.dt_s
    assert module.mechanism_sha256 == integrator.meta.mechanism_sha256
    cells = _cells("h2-air-flame")
    with torch.no_grad():
        stepped, flag = module(torch.as_tensor(cells), 3)
    result = integrator.advance(cells, 3)
    network = flag.numpy() == FLAG_NETWORK
    assert network.sum() > 100 and np.array_equal(flag.numpy() == FLAG_FALLBACK, result.fallback)
    assert np.array_equal(stepped.numpy()[network], result.states[network])
    assert np.array_equal(stepped.numpy()[~network], cells[~network])


def test_bfloat16_in_the_hidden_layers_only(tmp_path):
    """``bfloat16-hidden``: the first and last layers of every network in float32 (the scaled
    features and the outputs), the layers between in bfloat16, the activations cast between
    them; the step lies between the float32 and the bfloat16 ones, and an exported file of it
    steps exactly as the Integrator does."""
    from kinetics.step.forward import NETWORK_PRECISIONS

    path = resolve_model("h2-air-flame")
    hidden = Integrator.load(path, device="cpu", dtype="bfloat16-hidden")
    assert hidden.precision == "bfloat16-hidden" and NETWORK_PRECISIONS["bfloat16-hidden"] == (
        torch.float32, torch.bfloat16)
    fused = hidden.step_module.head.network.fused
    dtypes = [w.dtype for w in fused.weights]
    assert dtypes[0] == dtypes[-1] == torch.float32 and len(dtypes) >= 3
    assert all(d == torch.bfloat16 for d in dtypes[1:-1])
    # the network's outputs are the layer-by-layer reference's: float32 in and out, bfloat16 between
    meta, tensors, _ = read_model_file(path)
    net = hidden.step_module.head
    z = torch.randn(64, meta.architecture["n_in"])
    weights = [tensors[f"{WEIGHTS}net.{2 * i}.weight"] for i in range(len(dtypes))]
    biases = [tensors[f"{WEIGHTS}net.{2 * i}.bias"] for i in range(len(dtypes))]
    h = z
    for i, (w, b) in enumerate(zip(weights, biases)):
        if 0 < i < len(dtypes) - 1:
            h = torch.nn.functional.linear(h.to(torch.bfloat16), w.to(torch.bfloat16),
                                           b.to(torch.bfloat16)).float()
        else:
            h = torch.nn.functional.linear(h, w, b)
        if i < len(dtypes) - 1:
            h = torch.nn.functional.gelu(h)
    with torch.no_grad():
        got = net.network(z)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, h, rtol=0.02, atol=0.02)  # oneDNN's bfloat16 vs aten's
    cells = _cells("h2-air-flame")
    steps = {p: Integrator.load(path, device="cpu", dtype=p).advance(cells, 3).states[:, 0]
             for p in ("float32", "bfloat16")}
    mixed = hidden.advance(cells, 3)
    # against float32 (ignition states, 3 steps; seen: median 5e-4 / 5e-3 K, max 10.7 / 22.0 K)
    err_hidden = np.abs(mixed.states[:, 0] - steps["float32"])
    err_bf16 = np.abs(steps["bfloat16"] - steps["float32"])
    assert 0 < np.median(err_hidden) < np.median(err_bf16) / 3
    assert err_hidden.max() < err_bf16.max()
    out = tmp_path / "hidden.pt"
    proc = run_cli("export", "h2-air-flame", "-o", str(out), "--precision", "bfloat16-hidden")
    assert proc.returncode == 0 and "networks in bfloat16-hidden" in proc.stdout, proc.stderr
    extra = {"deepkin_model.json": ""}
    with quiet_jit():
        module = torch.jit.load(str(out), _extra_files=extra)
    record = json.loads(extra["deepkin_model.json"])
    assert (record["network_dtype"], record["hidden_dtype"]) == ("float32", "bfloat16")
    with torch.no_grad():
        stepped, flag = module(torch.as_tensor(cells), 3)
    network = flag.numpy() == FLAG_NETWORK
    assert np.array_equal(stepped.numpy()[network], mixed.states[network])


def test_export_refuses_what_it_cannot_write(tmp_path):
    proc = run_cli("export", "no-such-model", "-o", str(tmp_path / "x.pt"))
    assert proc.returncode == 1 and not (tmp_path / "x.pt").exists()
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: model: 'no-such-model' is neither a file nor a shipped")
    proc = run_cli("export", "h2-air", "-o", str(tmp_path / "x.pt"), "--precision", "float16")
    assert proc.returncode != 0 and "float16" in proc.stderr


def test_an_mscale_network_steps_as_the_python_engine_did(legacy, tmp_path):
    """Architectures TorchScript cannot script (MscaleDNN's generator sum) run as their trace:
    the same kernels, the same steps."""
    from kinetics.networks.architectures import build_model
    from tests.helpers.models import write_test_model

    meta, tensors, yaml_text = read_model_file(write_test_model(tmp_path / "m.safetensors"))
    arch = {"type": "mscale", "n_in": meta.architecture["n_in"], "n_out": meta.architecture["n_out"],
            "hidden": [24, 24], "scales": [1.0, 4.0]}
    torch.manual_seed(2)
    network = build_model(arch)
    tensors = non_network_tensors(tensors)
    tensors.update({WEIGHTS + k: v.detach() * 0.1 for k, v in network.state_dict().items()})
    meta.architecture = arch
    states = _cells("h2-air")[::7]
    before = legacy.Integrator(meta, tensors, yaml_text, device="cpu").advance(states, 2)
    after = Integrator(meta, tensors, yaml_text, device="cpu").advance(states, 2)
    assert isinstance(after.states, np.ndarray) and after.n_fallback == before.n_fallback
    assert np.abs(after.states[:, 0] - before.states[:, 0]).max() <= T_BOUND_K
    assert np.abs(after.states[:, 2:] - before.states[:, 2:]).max() <= Y_BOUND
    assert np.abs(after.states[:, 0] - states[:, 0]).max() > 0  # the network moved them
