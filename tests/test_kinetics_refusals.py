"""`deepkin train` and `deepkin validate` refuse what they cannot do, or what would say nothing,
with one line and exit 1 before any work (real CLI subprocesses)."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

from mechanisms.errors import InputError
from tests.conftest import run_cli

TRAIN = """model: {type: mlp, hidden: [16]}
epochs: 1
block_rows: 4096
"""


def one_error_line(proc) -> str:
    """The single ``error:`` line of a refused command (and no traceback, no internal error)."""
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("setting,message", [
    ('learning_rate: "fast"', "learning_rate: must be a number > 0, got 'fast'"),
    ("epochs: 2.5", "epochs: must be a whole number >= 1, got 2.5"),
    ("seed: -1", "seed: must be a whole number >= 0, got -1"),
    ("box_cox_lambda: 0", "box_cox_lambda: must be a number in (0, 1], got 0"),
    ("output_transform: {type: cube}", "output_transform: must be null or"),
    ("sources: autoignition", "sources: must be a list of source names"),
])
def test_bad_training_settings_are_named(small_dataset, tmp_path, setting, message):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN + setting + "\n")
    out = tmp_path / "m.safetensors"
    line = one_error_line(run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out),
                                  "-q"))
    assert message in line
    assert not out.exists()


def test_train_checks_its_outputs_and_epochs_before_training(small_dataset, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN)
    line = one_error_line(run_cli("train", str(small_dataset), "-c", str(cfg), "-o",
                                  "/nonexistent/m.safetensors", "-q"))
    assert line == ("error: out: cannot write /nonexistent/m.safetensors: directory "
                    "/nonexistent does not exist")
    line = one_error_line(run_cli("train", str(small_dataset), "-c", str(cfg), "-o",
                                  str(tmp_path / "m.safetensors"), "--log",
                                  str(tmp_path / "no" / "log.csv"), "-q"))
    assert line.startswith("error: log: cannot write")
    line = one_error_line(run_cli("train", str(small_dataset), "-c", str(cfg), "-o",
                                  str(tmp_path / "m.safetensors"), "--epochs", "0", "-q"))
    assert line == "error: epochs: must be a whole number >= 1, got 0"
    assert not (tmp_path / "m.safetensors").exists()


def test_train_refuses_an_interrupted_dataset_unless_allowed(small_dataset, tmp_path):
    data = tmp_path / "interrupted.h5"
    shutil.copy(small_dataset, data)
    with h5py.File(data, "r+") as h5:
        h5.attrs["complete"] = False
        runs = json.loads(h5.attrs["runs"])
        runs[-1]["complete"] = False
        h5.attrs["runs"] = json.dumps(runs)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN)
    out = tmp_path / "m.safetensors"
    line = one_error_line(run_cli("train", str(data), "-c", str(cfg), "-o", str(out), "-q"))
    assert f"dataset: {data} is incomplete" in line and "--allow-incomplete" in line
    assert not out.exists()
    proc = run_cli("train", str(data), "-c", str(cfg), "-o", str(out), "--allow-incomplete",
                   "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


@pytest.mark.parametrize("args,message", [
    (["--pressure-atm", "0"], "pressure_atm: must be a number > 0, got 0.0"),
    (["--T0", "0"], "temperature_k: must be a number > 0, got 0.0"),
    (["--phi", "-1"], "phi: must be a number > 0, got -1.0"),
    (["--T0", "100"], "temperature_k: 100 K lies outside the thermo range of h2o2.yaml"),
    (["--T0", "10000"], "temperature_k: 10000 K lies outside the thermo range of h2o2.yaml"),
    (["--T0", "3450"], "temperature_k: 3450 K lies above the model's domain"),
    (["--T0", "450"], "temperature_k: 450 K lies below the model's frozen temperature"),
    (["--pressure-atm", "100"], "pressure_atm: 100 atm lies outside the model's domain"),
    (["--ignition-search-s", "0"], "ignition-search-s: must be in (0, 10] s, got 0"),
    (["--ignition-search-s", "nan"], "ignition-search-s: must be in (0, 10] s, got nan"),
    (["--hold-steps", "-1"], "hold-steps: must be a whole number >= 0, got -1"),
])
def test_validate_refuses_a_grid_it_cannot_run_or_that_tests_nothing(tmp_path, args, message):
    out = tmp_path / "report"
    line = one_error_line(run_cli("validate", "h2-air", "--T0", "1200", "--pressure-atm", "1",
                                  "--phi", "1", "--steps", "10", "-o", str(out), "-q", *args))
    assert message in line
    assert not out.exists()


def test_validate_refuses_an_output_that_is_a_file(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    line = one_error_line(run_cli("validate", "h2-air", "--T0", "1200", "--pressure-atm", "1",
                                  "--phi", "1", "--steps", "10", "-o", str(existing), "-q"))
    assert line == f"error: out: {existing} exists and is not a directory"
    assert existing.read_text() == "keep me"


def test_validate_says_when_no_network_ever_stepped_a_condition(tmp_path):
    # 700 K H2/air does not ignite within the rollout: below the shipped model's domain (from
    # ~1150 K) Cantera takes every step, so the figures would compare Cantera with itself.
    out = tmp_path / "report"
    proc = run_cli("validate", "h2-air", "--T0", "700", "--pressure-atm", "1", "--phi", "1",
                   "--steps", "20", "-o", str(out), "-q", "--threads", "1")
    assert proc.returncode == 1, proc.stderr
    assert "T0 700 K, 1 atm, φ 1 never entered the model's domain" in proc.stderr
    assert "nothing was validated" in proc.stderr and "pass" not in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["outside_domain"] == ["T0 700 K, 1 atm, φ 1"]
    proc = run_cli("validate", "h2-air", "--T0", "700,1200", "--pressure-atm", "1", "--phi", "1",
                   "--steps", "20", "-o", str(out), "-q", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "T0 700 K, 1 atm, φ 1 never entered" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["outside_domain"] == ["T0 700 K, 1 atm, φ 1"]
    assert [c["network_steps"] > 0 for c in report["conditions"]] == [False, True]


@pytest.mark.parametrize("arch, field", [({"hidden": [-3]}, "model.hidden"),
                                         ({"hidden": []}, "model.hidden"),
                                         ({"hidden": [2.5]}, "model.hidden"),
                                         ({"type": "mscale", "hidden": [8], "scales": [float("nan")]},
                                          "model.scales")])
def test_an_impossible_network_is_refused_by_name(arch, field):
    from kinetics.networks.architectures import build_model

    with pytest.raises(InputError, match=f"^{field}: "):
        build_model({"n_in": 12, "n_out": 10, **arch})
