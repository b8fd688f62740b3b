"""The router (model file format 6, kinetics/training/router.py, `deepkin router`): the main
network's bfloat16 copy sends the cells it finds near equilibrium to the near-equilibrium
network before the float32 main network runs. On the shipped `h2-air-flame`'s networks, run in
float32 (a copy whose inference precision says so) on real Cantera states: every cell steps as
without the router, or, where the router sent it and the float32 network would not have (a
misrouted cell), as the near-equilibrium network steps it; the dense small-call step routes as
the TorchScript step; the exported file carries the router; bad models and settings are refused
in one line."""

from __future__ import annotations

import cantera as ct
import numpy as np
import pytest
import torch

from benchmarks.state_mixes import AIR, autoignition
from kinetics.integrator import Integrator
from kinetics.model.model_file import read_model_file
from kinetics.model.registry import resolve_model
from kinetics.step.compiled_step import FLAG_NETWORK, CompiledStep, script_step
from kinetics.step.small_step import DenseStep
from kinetics.training.router import set_router
from mechanisms.errors import InputError
from mechanisms.loading import solution_from_yaml
from tests.conftest import run_cli
from tests.helpers.models import rewrite_model_file, write_test_model


@pytest.fixture(scope="module")
def float32_model(tmp_path_factory):
    """The shipped `h2-air-flame` as a float32 model (its networks, its inference precision
    edited to float32): a model a router may be set on."""
    d = tmp_path_factory.mktemp("router")
    return rewrite_model_file(resolve_model("h2-air-flame"), d / "h2-f32.safetensors",
                              lambda raw: raw.update(inference_precision="float32"))


def _cells(gas: ct.Solution) -> np.ndarray:
    """A 0D H2/air ignition's states (fresh, igniting, recombining) and the equilibria of
    φ 0.5/1/2 mixtures at 1,000-1,500 K, at 1 and 10 atm."""
    rows = [autoignition(gas, "H2:1", n=400)]
    for p_atm in (1.0, 10.0):
        for phi in (0.5, 1.0, 2.0):
            for t0 in (1000.0, 1500.0):
                gas.set_equivalence_ratio(phi, "H2:1", AIR)
                gas.TP = t0, p_atm * ct.one_atm
                gas.equilibrate("HP")
                rows.append(np.r_[gas.T, gas.P, gas.Y][None])
    return np.vstack(rows)


def test_router_cli_checks_the_router_and_writes_it(float32_model, small_dataset, tmp_path):
    out = tmp_path / "routed.safetensors"
    proc = run_cli("router", str(float32_model), "-o", str(out), "-d", str(small_dataset))
    assert proc.returncode == 0, proc.stderr
    assert "misrouted" in proc.stdout and "h2-small.h5" in proc.stdout
    meta, _, _ = read_model_file(out)
    route_below = float(meta.tail["route_below"])
    assert meta.format_version == 6
    assert meta.router["precision"] == "bfloat16"
    assert meta.router["skip_main_below"] == pytest.approx(route_below / 2)
    [checked] = meta.router["checked"]
    assert checked["dataset"] == "h2-small.h5" and checked["rows"] > 0
    assert 0.0 <= checked["misrouted_share"] <= checked["skipped_share"] <= 1.0
    # the cells it sends were all below the threshold in bfloat16; in float32 near it
    assert checked["worst_skipped_rate"] < 2 * route_below
    # removed again
    off = tmp_path / "off.safetensors"
    run_cli("router", str(out), "-o", str(off), "--off", check=True)
    assert read_model_file(off)[0].router is None


def test_router_refusals_name_the_problem(float32_model, tmp_path):
    # a model that runs its networks in bfloat16 already (the shipped h2-air-flame)
    proc = run_cli("router", "h2-air-flame", "-o", str(tmp_path / "x.safetensors"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "bfloat16 already" in proc.stderr.strip().splitlines()[-1]
    # a model without a near-equilibrium network
    tiny = write_test_model(tmp_path / "tiny.safetensors")
    proc = run_cli("router", str(tiny), "-o", str(tmp_path / "y.safetensors"))
    assert proc.returncode != 0 and "no near-equilibrium network" in proc.stderr
    # a threshold above the near-equilibrium routing one
    proc = run_cli("router", str(float32_model), "-o", str(tmp_path / "z.safetensors"),
                   "--skip-main-below", "1")
    assert proc.returncode != 0 and "skip-main-below: must lie in" in proc.stderr
    assert not (tmp_path / "z.safetensors").exists()
    # files that carry a router they cannot: format 5, another precision, no tail
    routed, _ = set_router(float32_model, tmp_path / "routed.safetensors")
    for edit, words in ((lambda raw: raw.update(format_version=5), "needs format 6"),
                        (lambda raw: raw["router"].update(precision="float16"),
                         "router.precision"),
                        (lambda raw: raw["router"].update(skip_main_below=-1.0),
                         "router.skip_main_below"),
                        (lambda raw: raw.update(tail=None), "tail")):
        bad = rewrite_model_file(tmp_path / "routed.safetensors", tmp_path / "bad.safetensors",
                                 edit)
        with pytest.raises(InputError, match=words):
            read_model_file(bad)


def test_a_routed_cell_steps_as_without_the_router_or_as_the_tail_steps_it(float32_model,
                                                                            tmp_path):
    routed = tmp_path / "routed.safetensors"
    meta, _ = set_router(float32_model, routed)
    route_below = float(meta.tail["route_below"])
    plain = Integrator.load(float32_model, dtype="float32")
    with_router = Integrator.load(routed, dtype="float32")
    assert plain.skip_main_below == 0.0
    with_router.skip_main_below = route_below  # on, whatever this CPU's bfloat16 (the widest)
    cells = _cells(with_router.gas)
    expected = plain.advance(cells)
    got = with_router.advance(cells)
    plain.route_below = float("inf")  # every non-fresh cell on the near-equilibrium network
    all_tail = plain.advance(cells)
    same = np.all(got.states == expected.states, axis=1)
    as_tail = np.all(got.states == all_tail.states, axis=1)
    assert np.all(same | as_tail)
    assert got.n_tail_steps >= expected.n_tail_steps > 0
    # the router took cells (its test is not empty); near equilibrium the two routes agree
    step = with_router.step_module
    x = torch.as_tensor(cells)
    with torch.no_grad():
        skipped = _skipped(step, x)
    assert int(skipped.sum()) > 10
    # off again: the plain step's bits
    with_router.skip_main_below = 0.0
    plain.route_below = route_below
    assert np.array_equal(with_router.advance(cells).states, plain.advance(cells).states)


def _skipped(step, x: torch.Tensor) -> torch.Tensor:
    """The cells ``[n]`` bool the step's router sends to the tail (frozen ones left out)."""
    t, p, y = x[:, 0], x[:, 1], torch.clamp(x[:, 2:], min=0.0)
    y = y / y.sum(dim=1, keepdim=True)
    bct = (y ** step.lam - 1.0) / step.lam
    features, mix = step._features(t, p, bct, y)
    _, progress = step._products(mix)
    skip = step._skips_main(features, progress)
    warm = t >= step.frozen_temperature_k
    return (skip if skip is not None else torch.zeros_like(warm)) & warm


def test_the_dense_step_routes_as_the_compiled_step_with_a_router(float32_model, tmp_path):
    routed = tmp_path / "routed.safetensors"
    set_router(float32_model, routed)
    meta, tensors, yaml_text = read_model_file(routed)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    step = script_step(CompiledStep.from_model(meta, tensors, gas, "cpu", torch.float32))
    step.prepack()
    dense = DenseStep(meta, tensors, gas, torch.float32).eval()
    assert dense.router is not None
    x = torch.as_tensor(_cells(gas))
    route_below = float(meta.tail["route_below"])
    step.skip_main_below = route_below
    settings = dense.settings(step.route_below, step.induction_route_below,
                              step.induction_progress_below, step.induction_fallback_below,
                              route_below)
    with torch.no_grad():
        expected, flag = step(x, 1)
        _, _, _, counts = step.advance(x, 1, None, True)
        got, got_flag, got_counts = dense(x, settings)
    assert torch.equal(got_flag, flag)
    assert got_counts.tolist()[:3] == counts.tolist()
    assert float((got[:, 0] - expected[:, 0]).abs().max()) <= 1e-10
    assert float((got[:, 2:] - expected[:, 2:]).abs().max()) <= 1e-14


def test_the_exported_step_carries_the_router(float32_model, tmp_path):
    routed = tmp_path / "routed.safetensors"
    meta, _ = set_router(float32_model, routed)
    exported = tmp_path / "routed.pt"
    run_cli("export", str(routed), "-o", str(exported), check=True)
    module = torch.jit.load(str(exported))
    module.prepack()
    module.skip_main_below = float(meta.tail["route_below"])
    integrator = Integrator.load(routed, dtype="float32")
    integrator.skip_main_below = float(meta.tail["route_below"])
    cells = _cells(integrator.gas)
    with torch.no_grad():
        out, flag = module(torch.as_tensor(cells), 1)
    expected = integrator.advance(cells)
    network = (flag == FLAG_NETWORK).numpy()
    assert network.sum() > len(cells) // 2
    assert np.array_equal(out.numpy()[network], expected.states[network])
    assert int(_skipped(module, torch.as_tensor(cells)).sum()) > 10


@pytest.mark.slow
def test_small_calls_compiled_ahead_of_time_route_as_torchscript(float32_model, tmp_path):
    """One AOTInductor compile of the routed model (35-100 s on one core): its small calls step
    as the TorchScript step's, the router on."""
    routed = tmp_path / "routed.safetensors"
    meta, _ = set_router(float32_model, routed)
    aot = Integrator.load(routed, device="cpu", dtype="float32", small_calls="aot")
    plain = Integrator.load(routed, device="cpu", dtype="float32")
    assert aot.small_calls == "aot"
    for integrator in (aot, plain):
        integrator.skip_main_below = float(meta.tail["route_below"])
    cells = _cells(plain.gas)
    skipped = 0
    for n in (1, 3, 36):
        for start in range(0, len(cells) - n, max(n, len(cells) // 8)):
            x = cells[start:start + n]
            got, expected = aot.advance(x), plain.advance(x)
            assert np.abs(got.states[:, 0] - expected.states[:, 0]).max() <= 1e-10
            assert np.abs(got.states[:, 2:] - expected.states[:, 2:]).max() <= 1e-14
            assert got.n_tail_steps == expected.n_tail_steps
            skipped += int(_skipped(plain.step_module, torch.as_tensor(x)).sum())
    assert skipped > 0
