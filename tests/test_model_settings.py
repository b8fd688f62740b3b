"""`deepkin models set`: a model's resolution floor and validated precision changed without
retraining (real CLI runs, the shipped models, real Cantera states of a slow induction)."""

from __future__ import annotations

import dataclasses

import cantera as ct
import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.model_file import read_model_file
from kinetics.model.registry import resolve_model
from tests.conftest import run_cli

AIR = "O2:0.21,N2:0.79"


def _slow_induction_states() -> np.ndarray:
    """Stoichiometric H2/air from 975 K, 1 atm (near the second explosion limit), 0.1 and 0.3 ms
    into its 0.73 ms induction: [2, 2+ns] rows (T K, P Pa, Y)."""
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    gas.TP = 975.0, ct.one_atm
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    rows = []
    for t in (1e-4, 3e-4):
        net.advance(t)
        rows.append(np.r_[reactor.T, ct.one_atm, reactor.Y])
    return np.array(rows)


def test_models_set_writes_the_floor_and_the_step_follows_it(tmp_path):
    out = tmp_path / "floor.safetensors"
    # the floor h2-air-flame was trained with (0.01); the shipped file carries 0.1
    run = run_cli("models", "set", "h2-air-flame", "-o", str(out), "--fallback-below", "0.01")
    assert run.returncode == 0, run.stderr
    assert "0.01 × the induction network's scale" in run.stdout
    shipped_meta, shipped_tensors, shipped_yaml = read_model_file(resolve_model("h2-air-flame"))
    meta, tensors, yaml_text = read_model_file(out)
    assert meta.induction["fallback_below"] == 0.01
    listed = run_cli("models", "list", "--model-dir", str(tmp_path))
    assert listed.returncode == 0 and "+ induction network (floor 0.01)" in listed.stdout
    # Nothing else changed: the networks, their scales, the mechanism, every other field.
    assert yaml_text == shipped_yaml and sorted(tensors) == sorted(shipped_tensors)
    for name, value in shipped_tensors.items():
        assert torch.equal(tensors[name], value), name
    assert dataclasses.replace(meta, induction=shipped_meta.induction,
                               format_version=shipped_meta.format_version) == shipped_meta

    states = _slow_induction_states()
    shipped = Integrator.load(resolve_model("h2-air-flame"), device="cpu")
    trained = Integrator.load(out, device="cpu")
    assert shipped.induction_fallback_below == 0.1 and trained.induction_fallback_below == 0.01
    # At the floor it was trained with, the induction network steps these cells; at the shipped
    # one they are handed over, and they get the fallback reactor's step.
    as_trained = trained.advance(states)
    assert as_trained.n_unresolved_steps == 0 and as_trained.n_induction_steps == 2
    res = shipped.advance(states)
    assert res.fallback.tolist() == [True, True] and res.n_unresolved_steps == 2
    for row, stepped in zip(states, res.states):
        t_c, y_c = shipped._cantera_step(float(row[0]), float(row[1]), torch.as_tensor(row[2:]))
        assert stepped[0] == pytest.approx(t_c, abs=1e-9)
        np.testing.assert_allclose(stepped[2:], y_c.numpy(), atol=1e-14)


@pytest.mark.parametrize("args, field", [
    (("h2-air", "--fallback-below", "0.1"), "model: "),  # no induction network
    (("h2-air-flame", "--fallback-below", "-0.5"), "fallback-below: must be a finite number"),
    (("h2-air-flame", "--fallback-below", "inf"), "fallback-below: must be a finite number"),
    (("h2-air-flame",), "settings: give at least one of"),
])
def test_models_set_refuses_in_one_line(args, field, tmp_path):
    out = tmp_path / "x.safetensors"
    run = run_cli("models", "set", args[0], "-o", str(out), *args[1:])
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


def test_models_set_records_the_validated_precision_and_auto_follows_it(tmp_path):
    """The precision a model is validated in is what ``auto`` runs where bfloat16 multiplies
    natively; float32 elsewhere; nothing else in the file changes."""
    from kinetics.step.forward import native_bfloat16_cpu

    out = tmp_path / "h2-f32.safetensors"
    run = run_cli("models", "set", "h2-air-flame", "-o", str(out), "--inference-precision",
                  "float32")
    assert run.returncode == 0, run.stderr
    assert "validated in float32" in run.stdout
    shipped_meta, shipped_tensors, _ = read_model_file(resolve_model("h2-air-flame"))
    meta, tensors, _ = read_model_file(out)
    assert shipped_meta.inference_precision == "bfloat16" and meta.inference_precision == "float32"
    assert dataclasses.replace(meta, inference_precision="bfloat16",
                               format_version=shipped_meta.format_version) == shipped_meta
    assert all(torch.equal(tensors[k], v) for k, v in shipped_tensors.items())
    listed = run_cli("models", "list", "--model-dir", str(tmp_path))
    assert listed.returncode == 0 and "where native" not in listed.stdout
    assert Integrator.load(out, device="cpu").dtype == torch.float32
    bad = run_cli("models", "set", "h2-air", "-o", str(tmp_path / "x.safetensors"),
                  "--inference-precision", "float16")
    assert bad.returncode == 2 and "'float16' is not one of" in bad.stderr
    native = torch.bfloat16 if native_bfloat16_cpu() else torch.float32
    assert Integrator.load(resolve_model("h2-air-flame"), device="cpu").dtype == native
    # bfloat16 in the hidden layers only: auto runs it so where bfloat16 is native
    hidden = tmp_path / "h2-hidden.safetensors"
    run = run_cli("models", "set", "h2-air-flame", "-o", str(hidden), "--inference-precision",
                  "bfloat16-hidden")
    assert run.returncode == 0 and "validated in bfloat16-hidden" in run.stdout, run.stderr
    assert read_model_file(hidden)[0].inference_precision == "bfloat16-hidden"
    assert Integrator.load(hidden, device="cpu").precision == (
        "bfloat16-hidden" if native_bfloat16_cpu() else "float32")
