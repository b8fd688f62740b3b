"""kinetics/: training, the model file, the inference engine and its guards (real Cantera/HDF5)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cantera as ct
import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.model_file import FORMAT_VERSION, read_model_file
from kinetics.model.synthetic import write_random_model
from kinetics.networks.transforms import box_cox, box_cox_inverse, signed_power, signed_power_inverse
from mechanisms import InputError, load_mechanism
from mechanisms.dataset_file import read_dataset
from mechanisms.reactor import FALLBACK_TOLERANCES, FollowedCells, ReactorStep
from tests.conftest import run_cli

TRAIN_YAML = """name: tiny-h2
model: {type: mlp, hidden: [48, 48]}
epochs: 2
batch_size: 256
block_rows: 2048
learning_rate: 0.002
frozen_temperature_k: 400.0
"""


@pytest.fixture(scope="module")
def tiny_model(small_dataset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    cfg = folder / "train.yaml"
    cfg.write_text(TRAIN_YAML)
    out = folder / "tiny-h2.safetensors"
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out), "--device", "cpu",
                   "-q")
    assert proc.returncode == 0, proc.stderr
    assert "best validation loss" in proc.stdout
    return out


def test_transforms_round_trip():
    y = torch.tensor([0.0, 1e-30, 1e-12, 1e-3, 0.5, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(box_cox_inverse(box_cox(y, 0.1), 0.1), y, rtol=1e-10, atol=1e-300)
    assert float(box_cox(torch.tensor(0.0), 0.1)) == pytest.approx(-10.0)
    x = torch.tensor([-1e3, -1.0, 0.0, 2.5, 1e4], dtype=torch.float64)
    np.testing.assert_allclose(signed_power_inverse(signed_power(x, 0.5), 0.5), x, rtol=1e-12)


def test_training_writes_a_complete_model_file(tiny_model, small_dataset):
    meta, tensors, yaml_text = read_model_file(tiny_model)
    mech = load_mechanism("h2o2.yaml")
    assert meta.name == "tiny-h2" and meta.species == mech.species_names
    assert meta.mechanism_sha256 == mech.sha256 and yaml_text == mech.yaml_text
    assert meta.dt_s == 1e-6 and meta.box_cox_lambda == 0.1
    assert meta.architecture["hidden"] == [48, 48] and meta.architecture["n_in"] == 12
    assert set(meta.inert_species) == {"AR", "N2"}
    inputs, _, _ = read_dataset(small_dataset)
    assert meta.temperature_k[0] >= inputs[:, 0].min() - 1e-9
    assert meta.temperature_k[1] <= inputs[:, 0].max() + 1e-9
    for name in ("norm.x_mean", "norm.x_std", "norm.y_mean", "norm.y_std", "domain.bct_min",
                 "domain.bct_max"):
        assert name in tensors and torch.isfinite(tensors[name]).all()
    assert meta.training["rows_train"] + meta.training["rows_val"] == len(inputs)
    assert meta.training["fuel"] == "H2:1"
    rows = list(csv.DictReader(open(tiny_model.with_name("tiny-h2.log.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)


def test_resume_continues_from_the_checkpoint(tiny_model, small_dataset, tmp_path):
    out = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, out)
    shutil.copy(tiny_model.with_name("tiny-h2.safetensors.ckpt"), tmp_path / "m.safetensors.ckpt")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN_YAML.replace("epochs: 2", "epochs: 3"))
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out), "--resume",
                   "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "after 1 epoch(s) this session" in proc.stdout
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(tmp_path / "x.safetensors"),
                   "--resume", "-q")
    assert proc.returncode != 0 and "resume:" in proc.stderr


def test_init_from_starts_a_fine_tuning_run_from_a_models_weights(tiny_model, small_dataset,
                                                                   tmp_path):
    """``init_from``: the first epoch starts at the model's weights (a learning rate too small to
    move them keeps them), and a model of other rows or another network is refused by name."""
    from kinetics.training.train import TrainConfig

    _, base_tensors, _ = read_model_file(tiny_model)
    tune = (TRAIN_YAML.replace("epochs: 2", "epochs: 1").replace(
        "learning_rate: 0.002", "learning_rate: 1.0e-12")
        + f"init_from: {tiny_model}\nenthalpy_loss_weight: 1.0\n")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(tune)
    out = tmp_path / "tuned.safetensors"
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out), "--device", "cpu",
                   "-q")
    assert proc.returncode == 0, proc.stderr
    meta, tensors, _ = read_model_file(out)
    assert meta.training["config"]["init_from"] == str(tiny_model)
    for key, value in base_tensors.items():
        if key.startswith("net."):
            torch.testing.assert_close(tensors[key], value, rtol=0, atol=1e-6)
    for text, message in ((tune + "val_fraction: 0.3\n",
                           r"init_from: .* was trained on other rows \(its norm\.\w+ differs"),
                          (tune.replace("hidden: [48, 48]", "hidden: [32, 32]"),
                           "init_from: .* has the main network")):
        cfg.write_text(text)
        proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o",
                       str(tmp_path / "x.safetensors"), "--device", "cpu", "-q")
        assert proc.returncode == 1 and re.search(message, proc.stderr), proc.stderr
    with pytest.raises(InputError, match="init_scales: keeps init_from's scales; set init_from"):
        TrainConfig.from_dict({"init_scales": True})
    with pytest.raises(InputError, match="init_scales: must be true or false"):
        TrainConfig.from_dict({"init_from": str(tiny_model), "init_scales": "yes"})


def _random_states(integrator: Integrator, n: int, seed: int = 0) -> np.ndarray:
    """Random in-domain h2/air-like states (T 1000–2500 K, 1–10 atm)."""
    rng = np.random.default_rng(seed)
    names = integrator.species
    y = np.zeros((n, len(names)))
    for s, lo, hi in (("H2", 1e-3, 0.05), ("O2", 0.05, 0.23), ("H2O", 1e-4, 0.2),
                      ("OH", 1e-8, 1e-3), ("H", 1e-9, 1e-4), ("O", 1e-9, 1e-4),
                      ("HO2", 1e-9, 1e-5), ("H2O2", 1e-10, 1e-6)):
        y[:, names.index(s)] = 10 ** rng.uniform(np.log10(lo), np.log10(hi), n)
    y[:, names.index("N2")] = 1.0 - y.sum(axis=1)
    states = np.empty((n, 2 + len(names)))
    states[:, 0] = rng.uniform(1000, 2500, n)
    states[:, 1] = rng.uniform(1, 10, n) * ct.one_atm
    states[:, 2:] = y
    return states


@pytest.fixture(scope="module")
def random_h2_model(tmp_path_factory) -> Integrator:
    path = tmp_path_factory.mktemp("random") / "r.safetensors"
    write_random_model(path, "h2o2.yaml", hidden=[32, 32])
    return Integrator.load(path, device="cpu")


def test_step_conserves_mass_and_enthalpy(random_h2_model):
    it = random_h2_model
    states = _random_states(it, 500)
    for dtype in (np.float64, np.float32):
        out = it.step(states.astype(dtype))
        assert out.dtype == dtype and out.shape == states.shape
    out = it.step(states)
    np.testing.assert_allclose(out[:, 2:].sum(axis=1), 1.0, atol=1e-12)
    assert (out[:, 2:] >= 0).all()
    np.testing.assert_array_equal(out[:, 1], states[:, 1])
    gas = ct.Solution("h2o2.yaml")
    for i in range(0, 500, 50):
        gas.TPY = states[i, 0], states[i, 1], states[i, 2:]
        h0 = gas.enthalpy_mass
        gas.TPY = out[i, 0], out[i, 1], out[i, 2:]
        assert abs(gas.enthalpy_mass - h0) <= 1e-9 * max(abs(h0), 1e4)
    # inert species are untouched
    n2 = 2 + it.species.index("N2")
    np.testing.assert_allclose(out[:, n2], states[:, n2], rtol=1e-12)


def test_step_conserves_elements(random_h2_model):
    """Atoms are neither created nor destroyed: element mass fractions stay as they were."""
    it = random_h2_model
    states = _random_states(it, 200, seed=5)
    out = it.step(states)
    gas = ct.Solution("h2o2.yaml")
    a = np.array([[gas.n_atoms(k, e) * gas.atomic_weight(e) / gas.molecular_weights[k]
                   for k in range(gas.n_species)] for e in range(gas.n_elements)])
    np.testing.assert_allclose(out[:, 2:] @ a.T, states[:, 2:] @ a.T, rtol=0, atol=1e-10)


def test_torch_input_and_substeps(random_h2_model):
    it = random_h2_model
    states = _random_states(it, 64, seed=1)
    once = it.step(it.step(it.step(states)))
    three = it.advance(states, it.substeps(3e-6))
    assert three.n_substeps == 3
    np.testing.assert_allclose(three.states, once, rtol=1e-12, atol=1e-15)
    t_out = it.step(torch.from_numpy(states))
    assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.float64
    np.testing.assert_allclose(t_out.numpy(), it.step(states))


def test_advance_takes_a_number_of_model_steps(random_h2_model):
    """``substeps`` is the one dt → count conversion; ``advance`` takes the count, ``step`` a dt."""
    it = random_h2_model
    states = _random_states(it, 16, seed=6)
    assert it.substeps(None) == 1 and it.substeps(4e-6) == 4
    four = it.advance(states, 4)
    assert four.n_substeps == 4 and it.advance(states).n_substeps == 1
    np.testing.assert_array_equal(four.states, it.step(states, 4e-6))
    for bad in (0, -1, 1.5, None, True):
        with pytest.raises(InputError, match="n_substeps: must be a whole number >= 1"):
            it.advance(states, bad)


def test_frozen_and_fallback_cells(tiny_model):
    it = Integrator.load(tiny_model, device="cpu")
    states = _random_states(it, 6, seed=2)
    states[0, 0] = 350.0  # below the frozen temperature (400 K)
    states[1, 0] = 2999.0  # hotter than anything in the training data: Cantera steps it
    states[1, 1] = 60 * ct.one_atm
    res = it.advance(states)
    assert res.n_frozen == 1 and res.n_fallback >= 1
    np.testing.assert_array_equal(res.states[0], states[0])
    gas = ct.Solution("h2o2.yaml")
    _, expected = ReactorStep(gas, 1e-6, FALLBACK_TOLERANCES).advance(states[1])
    np.testing.assert_allclose(res.states[1], expected, rtol=1e-8, atol=1e-12)


def test_followed_fallback_cells_go_on_from_their_own_reactor(tiny_model):
    """In a rollout (``following_cells``) a fallback cell fed back unchanged continues its
    reactor (no CVODES restart): the same trajectory as restarting every step, within the
    fallback tolerances, and as Cantera's uninterrupted run; a cell changed in between restarts."""
    it = Integrator.load(tiny_model, device="cpu")
    states = _random_states(it, 2, seed=5)
    states[:, 0] = 1500.0
    states[:, 1] = 60 * ct.one_atm  # above the training data: both cells are Cantera's
    restarted, followed_x = states.copy(), states.copy()
    for _ in range(30):
        restarted = it.advance(restarted).states
    with it.following_cells() as followed:
        for k in range(30):
            res = it.advance(followed_x)
            assert res.n_fallback == 2
            followed_x = res.states
            if k == 10:
                followed_x[1, 0] += 1e-3  # as transport would: cell 1 restarts once
        assert followed.n_restarted == 3 and followed.n_continued == 57
    assert it._followed is None  # the block ends, the fallback is the plain one again
    np.testing.assert_allclose(followed_x[0], restarted[0], rtol=2e-6, atol=1e-10)
    assert followed_x[0, 1] == states[0, 1]  # P as given, not recomputed
    gas = ct.Solution("h2o2.yaml")
    gas.TPY = states[0, 0], states[0, 1], states[0, 2:]
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = 1e-10, 1e-20
    net.advance(30 * it.dt_s)
    assert abs(followed_x[0, 0] - gas.T) < 1e-3 * abs(gas.T - states[0, 0]) + 1e-6


def test_held_cells_stay_on_their_reactor_without_asking_the_step(tiny_model, small_dataset):
    """``following_cells(hold_steps=N)``: a cell the step hands to Cantera is stepped there for
    the next N calls without the step (``n_held``), then asked again; every state is the one the
    same rollout gives without the hold (the Cantera rows to the bit); a row that falls back in
    a call on some of the cells keeps its own reactor (followed by the caller's row)."""
    it = Integrator.load(tiny_model, device="cpu")
    inputs, _, _ = read_dataset(small_dataset)  # the training rows: inside the domain
    candidates = np.ascontiguousarray(inputs[inputs[:, 0] > 1200.0][::97][:64])
    res = it.advance(candidates)
    inside = candidates[~(res.fallback | res.frozen)]
    assert len(inside) >= 4
    states = inside[:4].copy()
    states[:2, 1] = 60 * ct.one_atm  # above the training data: rows 0 and 1 are Cantera's

    def rollout(hold_steps: int) -> tuple[list, np.ndarray, FollowedCells]:
        x, seen = states.copy(), []
        with it.following_cells(hold_steps=hold_steps) as followed:
            for k in range(6):
                if k == 1:
                    x[3, 1] = 60 * ct.one_atm  # row 3 leaves the domain too
                res = it.advance(x)
                seen.append((res.n_held, res.n_fallback, res.fallback.tolist()))
                x = res.states
        return seen, x, followed

    held, x_held, followed = rollout(3)
    asked, x_asked, _ = rollout(0)
    assert [n for n, _, _ in held] == [0, 2, 3, 3, 1, 2]
    assert [n for n, _, _ in asked] == [0] * 6
    assert [f for _, _, f in held] == [f for _, _, f in asked]  # the same cells on Cantera
    assert held[1][2] == [True, True, False, True]
    assert followed.n_restarted == 3 and followed.n_continued == 14  # rows 0, 1, 3: own reactors
    np.testing.assert_array_equal(x_held[[0, 1, 3]], x_asked[[0, 1, 3]])
    np.testing.assert_allclose(x_held[2], x_asked[2], rtol=1e-12, atol=1e-15)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="hold_steps: must be a whole number >= 0"):
            with it.following_cells(hold_steps=bad):
                pass


def test_followed_cells_beyond_the_cap_are_stepped_as_before():
    from mechanisms.reactor import FollowedCells

    gas = ct.Solution("h2o2.yaml")
    followed = FollowedCells(lambda: ct.Solution("h2o2.yaml"), 1e-6, max_cells=1)
    gas.TPX = 1500, ct.one_atm, "H2:2,O2:1,N2:3.76"
    state = np.concatenate([[gas.T, gas.P], gas.Y])
    assert followed.advance(0, state) is not None
    assert followed.advance(1, state) is None  # not followed: the caller steps it
    with pytest.raises(ct.CanteraError):
        followed.advance(0, np.concatenate([[1500.0, -1.0], gas.Y]))


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.__setitem__((0, 0), np.nan), "row 0 holds NaN"),
    (lambda s: s.__setitem__((1, 3), -0.01), "negative mass fraction of H"),
    (lambda s: s.__setitem__((2, 2), s[2, 2] + 0.1), "summing to"),
    (lambda s: s.__setitem__((0, 1), -5.0), "pressure <= 0"),
])
def test_bad_states_are_named(random_h2_model, mutate, message):
    states = _random_states(random_h2_model, 4, seed=3)
    mutate(states)
    with pytest.raises(InputError, match=message):
        random_h2_model.step(states)


@pytest.mark.parametrize("row,col,value,message", [
    (9000, 5, np.inf, "row 9000 holds NaN or inf"),
    (4096, 0, 0.0, "row 4096 has temperature <= 0"),
    (8191, 4, -1e-3, "row 8191 has negative mass fraction"),
    (9999, 6, 0.5, "row 9999 has mass fractions summing to"),
])
def test_bad_rows_in_later_check_blocks_are_found(random_h2_model, row, col, value, message):
    # The host-side check walks the rows in blocks; a bad row in any block is caught and named,
    # and a torch tensor gets the same answer as a numpy array.
    states = _random_states(random_h2_model, 10000, seed=4)
    random_h2_model.check_states(torch.from_numpy(states))  # all good
    states[row, col] = value
    for given in (states, torch.from_numpy(states.copy())):
        with pytest.raises(InputError, match=message):
            random_h2_model.step(given)


def test_wrong_width_dt_and_mechanism_are_refused(random_h2_model, tmp_path):
    it = random_h2_model
    with pytest.raises(InputError, match=r"expected shape \[n, 12\]"):
        it.step(np.zeros((3, 11)))
    with pytest.raises(InputError, match="not a whole multiple"):
        it.step(_random_states(it, 2), dt=1.5e-6)
    gri = load_mechanism("gri30.yaml")
    with pytest.raises(InputError, match="trained on mechanism"):
        Integrator.load(it.path, expect_mechanism_sha256=gri.sha256)


def test_damaged_model_files_are_refused(random_h2_model, tmp_path):
    data = Path(random_h2_model.path).read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        Integrator.load(truncated)
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # inside the last tensor's bytes
    corrupted = tmp_path / "flipped.safetensors"
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="corrupted"):
        Integrator.load(corrupted)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    proc = run_cli("validate", str(text), "--steps", "10", "-q")
    assert proc.returncode != 0 and proc.stderr.startswith("error: model:")
    assert "Traceback" not in proc.stderr


def test_models_list_and_validate_cli(tiny_model, tmp_path):
    proc = run_cli("models", "list", "--model-dir", str(tiny_model.parent), check=True)
    assert "tiny-h2" in proc.stdout and "h2o2.yaml" in proc.stdout and "dt 1e-06 s" in proc.stdout
    assert "H2:1 / O2:1,N2:3.76" in proc.stdout  # the streams it was trained on
    shipped = run_cli("models", "list", check=True).stdout
    assert "h2-air-flame" in shipped and "bfloat16 where native" in shipped
    methane = next(line for line in shipped.splitlines() if line.startswith("ch4-air "))
    assert "gri30.yaml (53 species), dt 5e-06 s, CH4:1 / O2:1,N2:3.76" in methane
    assert "bfloat16-hidden where native" in methane
    out = tmp_path / "val"
    proc = run_cli("validate", str(tiny_model), "--T0", "1200", "--pressure-atm", "1", "--phi", "1",
                   "--steps", "200", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["rollout_steps"] >= 200 and len(report["conditions"]) == 1
    gas = ct.Solution("h2o2.yaml")  # an independent ignition delay: T crosses 1600 K
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    gas.TP = 1200.0, ct.one_atm
    net = ct.ReactorNet([ct.IdealGasConstPressureReactor(gas, clone=False)])
    while gas.T < 1600.0:
        net.step()
    cond = report["conditions"][0]
    assert cond["idt_cantera_s"] == pytest.approx(net.time, rel=0.02)
    # Cantera read on the 1 µs step grid: ~47 steps to ignition, so within ~2 % of adaptive.
    assert cond["idt_cantera_grid_s"] == pytest.approx(cond["idt_cantera_s"], rel=0.02)
    assert report["grid_idt_max_rel"] == pytest.approx(
        abs(cond["idt_cantera_grid_s"] - cond["idt_cantera_s"]) / cond["idt_cantera_s"])
    if cond["idt_surrogate_s"] is not None:
        assert cond["idt_rel_error"] == pytest.approx(
            abs(cond["idt_surrogate_s"] - cond["idt_cantera_grid_s"]) / cond["idt_cantera_grid_s"])
    assert report["sum_y_max_dev"] <= 1e-6 and report["enthalpy_max_rel"] <= 1e-6
    for name in ("report.md", "temperature.png", "species.png"):
        assert (out / name).stat().st_size > 500


def test_distributed_training_with_torchrun(small_dataset, tmp_path):
    """Two CPU processes (gloo backend) train one model with DistributedDataParallel."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAIN_YAML.replace("epochs: 2", "epochs: 1"))
    out = tmp_path / "ddp.safetensors"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--standalone", "-m",
                           "deepkin", "train", str(small_dataset), "-c", str(cfg), "-o", str(out),
                           "--device", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta, _, _ = read_model_file(out)
    assert meta.training["epochs"] == 1


def test_shipped_model_smoke_validation(tmp_path):
    """The shipped H2/air model against Cantera at two conditions of the validation grid."""
    out = tmp_path / "shipped"
    proc = run_cli("validate", "h2-air", "--T0", "1000,1200,1400", "--pressure-atm", "5", "--phi", "1",
                   "--steps", "3000", "-o", str(out), "-q", "--threads", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "h2-air" and len(report["conditions"]) == 3
    assert report["idt_max_rel"] <= 0.10 and report["idt_mean_rel"] <= 0.03
    assert report["equilibrium_max_k"] <= 10.0
    assert report["sum_y_max_dev"] <= 1e-6 and report["enthalpy_max_rel"] <= 1e-6


def test_element_projection_when_two_elements_share_one_species(tmp_path):
    """Fresh CH4/air: H and C are carried by CH4 alone, so the projection's system is singular."""
    path = write_random_model(tmp_path / "gri.safetensors", "gri30.yaml", hidden=[32])
    it = Integrator.load(path, device="cpu")
    gas = ct.Solution("gri30.yaml")
    gas.TPX = 1500.0, ct.one_atm, "CH4:1,O2:2,N2:7.52"
    states = np.tile(np.r_[gas.T, gas.P, gas.Y], (64, 1))
    states[:, 0] += np.linspace(-100, 100, 64)
    res = it.advance(states)
    assert res.n_fallback == 0
    np.testing.assert_allclose(res.states[:, 0], states[:, 0], atol=1.0)  # tiny random rates
    np.testing.assert_allclose(res.states[:, 2:].sum(axis=1), 1.0, atol=1e-12)


def test_physics_losses_and_mscale_train(small_dataset, tmp_path):
    """ΣY and enthalpy penalties and the MscaleDNN variant run end to end (in-process trainer)."""
    from kinetics.training.train import TrainConfig, train

    cfg = TrainConfig.from_dict({"model": {"type": "mscale", "hidden": [16, 16], "scales": [1, 4]},
                                 "epochs": 1, "batch_size": 512, "block_rows": 4096,
                                 "mass_loss_weight": 1.0, "enthalpy_loss_weight": 0.1,
                                 "heat_release_weight_k": 2.0, "heat_release_weight_max": 5.0,
                                 "output_transform": {"type": "signed_power", "lambda": 0.5}})
    result = train(small_dataset, tmp_path / "m.safetensors", cfg, device="cpu", progress=False)
    assert np.isfinite(result.best_val_loss) and result.epochs_run == 1
    meta, _, _ = read_model_file(tmp_path / "m.safetensors")
    assert meta.architecture["type"] == "mscale" and meta.output_transform["lambda"] == 0.5
    it = Integrator.load(tmp_path / "m.safetensors", device="cpu")
    out = it.step(_random_states(it, 8))
    np.testing.assert_allclose(out[:, 2:].sum(axis=1), 1.0, atol=1e-12)
    with pytest.raises(InputError, match="epoch: unknown training setting .*did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    for bad, message in (({"route_below": 0}, "route_below: must be a number > 0"),
                         ({"route_margin": 0.5}, "route_margin: must be a number >= 1"),
                         ({"target_scaling": "minmax"}, "target_scaling: must be zscore or rms"),
                         ({"heat_release_weight_k": 0},
                          r"heat_release_weight_k: must be a number > 0 \(K\) or null"),
                         ({"heat_release_weight_max": 0.5},
                          "heat_release_weight_max: must be a number >= 1")):
        with pytest.raises(InputError, match=message):
            TrainConfig.from_dict(bad)


def test_heat_release_weights_grow_with_the_steps_temperature_change():
    from kinetics.training.train import heat_release_weights

    inputs = torch.zeros((4, 12), dtype=torch.float64)
    inputs[:, 0] = 1500.0
    targets = inputs.clone()
    targets[:, 0] += torch.tensor([0.0, 1.0, -3.0, 400.0], dtype=torch.float64)
    weights = heat_release_weights(inputs, targets, scale_k=1.0, most=10.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 2.0, 4.0, 10.0], dtype=torch.float64))


def test_output_weights_scale_a_species_loss_and_name_what_is_wrong(small_dataset, tmp_path):
    """``output_weights``: one species' output counts more in the L1 loss (weights scaled to a
    mean of 1, recorded in the model); a species the mechanism lacks or a bad weight is refused
    with one line naming it."""
    from kinetics.training.train import TrainConfig, species_output_weights, train
    from mechanisms.dataset_check import verified_facts

    facts = verified_facts(small_dataset)
    weights = species_output_weights({"HO2": 10.0, "H2O2": 4.0}, facts)
    ns = len(facts.species)
    assert weights.shape == (ns,) and abs(float(weights.mean()) - 1.0) < 1e-6
    ho2, h2o2, h2 = (facts.species.index(s) for s in ("HO2", "H2O2", "H2"))
    assert abs(float(weights[ho2] / weights[h2]) - 10.0) < 1e-5
    assert abs(float(weights[h2o2] / weights[h2]) - 4.0) < 1e-5
    assert species_output_weights(None, facts) is None
    with pytest.raises(InputError, match=r"output_weights: NO is not a species of the dataset's "
                                         r"mechanism \(.*h2o2.yaml"):
        species_output_weights({"NO": 10.0}, facts)
    for bad in ({"HO2": 0}, {"HO2": "x"}, [10.0], {}):
        with pytest.raises(InputError, match="output_weights: must map species names to "
                                             "numbers > 0"):
            TrainConfig.from_dict({"output_weights": bad})
    with pytest.raises(InputError, match="output_weights: a species name was read as true/false; "
                                         "quote it"):
        TrainConfig.from_dict({"output_weights": {False: 10.0}})  # YAML's unquoted NO

    base = {"model": {"type": "mlp", "hidden": [16]}, "epochs": 1, "batch_size": 512,
            "block_rows": 4096, "seed": 3}
    plain = train(small_dataset, tmp_path / "a.safetensors", TrainConfig.from_dict(base),
                  device="cpu", progress=False)
    weighted = train(small_dataset, tmp_path / "b.safetensors", TrainConfig.from_dict(
        {**base, "output_weights": {"HO2": 10.0}}), device="cpu", progress=False)
    assert np.isfinite(weighted.best_val_loss) and weighted.best_val_loss != plain.best_val_loss
    meta, _, _ = read_model_file(tmp_path / "b.safetensors")
    assert meta.training["config"]["output_weights"] == {"HO2": 10.0}
    with pytest.raises(InputError, match="output_weights: NO is not a species"):
        train(small_dataset, tmp_path / "c.safetensors", TrainConfig.from_dict(
            {**base, "output_weights": {"NO": 2.0}}), device="cpu", progress=False)
    assert not (tmp_path / "c.safetensors").exists()


def test_near_equilibrium_network_is_trained_routed_and_counted(tiny_model, small_dataset, tmp_path):
    """``tail_of``: a second network for the slow cells of an existing model, in one file."""
    cfg = tmp_path / "tail.yaml"
    cfg.write_text(TRAIN_YAML.replace("epochs: 2", "epochs: 1")
                   + f"tail_of: {tiny_model}\nroute_below: 0.05\n")
    out = tmp_path / "with-tail.safetensors"
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out), "--device", "cpu",
                   "-q")
    assert proc.returncode == 0, proc.stderr
    meta, tensors, _ = read_model_file(out)
    main_meta, main_tensors, _ = read_model_file(tiny_model)
    assert meta.format_version == FORMAT_VERSION and meta.tail["route_below"] == 0.05
    assert 0 < meta.tail["training"]["rows_train"] < main_meta.training["rows_train"]
    for name, value in main_tensors.items():  # the main model is carried over unchanged
        assert torch.equal(tensors[name], value), name
    assert any(k.startswith("tail.net.") for k in tensors)

    both = Integrator.load(out, device="cpu")
    main = Integrator.load(tiny_model, device="cpu")
    gas = ct.Solution("h2o2.yaml")  # near-equilibrium cells: the slow ones
    states = []
    for t0, phi in ((1200.0, 1.0), (1400.0, 0.5), (1300.0, 2.0)):
        gas.TP = t0, ct.one_atm
        gas.set_equivalence_ratio(phi, "H2:1", "O2:1,N2:3.76")
        gas.equilibrate("HP")
        states.append(np.r_[gas.T, gas.P, gas.Y])
    states = np.array(states)
    routed = both.advance(states)
    np.testing.assert_allclose(routed.states[:, 2:].sum(axis=1), 1.0, atol=1e-12)
    # Routing off: exactly the main model; routing everything: every network cell counted.
    both.route_below = 0.0
    off = both.advance(states)
    assert off.n_tail_steps == 0
    np.testing.assert_array_equal(off.states, main.step(states))
    both.route_below = np.inf
    every = both.advance(states)
    assert every.n_tail_steps == len(states) - every.n_fallback


def test_tail_of_a_model_of_another_mechanism_is_refused(small_dataset, tmp_path):
    other = write_random_model(tmp_path / "gri.safetensors", "gri30.yaml", hidden=[16])
    cfg = tmp_path / "tail.yaml"
    cfg.write_text(TRAIN_YAML + f"tail_of: {other}\n")
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(tmp_path / "x.safetensors"),
                   "--device", "cpu", "-q")
    assert proc.returncode != 0
    assert "tail_of:" in proc.stderr and "mechanism" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_reads_species_a_set_time_after_each_sides_ignition(tiny_model, tmp_path):
    """--after-ignition OH,H2O at 0.5 ms: Cantera's values are those of an independent
    constant-pressure run read 0.5 ms after its own ignition (T0 + 400 K)."""
    out = tmp_path / "val"
    proc = run_cli("validate", str(tiny_model), "--T0", "1200", "--pressure-atm", "1", "--phi", "1",
                   "--steps", "200", "--after-ignition", "OH,H2O", "--after-ignition-s", "5e-4",
                   "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["after_ignition_s"] == 5e-4
    (condition,) = report["conditions"]
    after = condition["after_ignition"]
    assert set(after) == {"OH", "H2O"}
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    gas.TP = 1200.0, ct.one_atm
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = 1e-10, 1e-20
    times, temps, ys = [0.0], [gas.T], [gas.Y.copy()]
    while net.time < 5e-3:
        net.step()
        times.append(net.time), temps.append(reactor.T), ys.append(gas.Y.copy())
    idt = float(np.interp(1600.0, temps[:np.argmax(np.array(temps) >= 1600.0) + 1],
                          times[:np.argmax(np.array(temps) >= 1600.0) + 1]))
    ys = np.array(ys)
    for name in ("OH", "H2O"):
        expected = np.interp(idt + 5e-4, times, ys[:, gas.species_index(name)])
        cantera, surrogate, error = after[name]
        assert cantera == pytest.approx(expected, rel=2e-3), name
        if surrogate is not None:
            assert error == pytest.approx(abs(surrogate - cantera) / cantera, rel=1e-9)
    text = (out / "report.md").read_text()
    assert "OH 0.5 ms after ignition (max relative error)" in text
    # A species the model lacks is one line, before any work.
    bad = run_cli("validate", str(tiny_model), "--T0", "1200", "--pressure-atm", "1", "--phi", "1",
                  "--after-ignition", "CO", "-o", str(tmp_path / "b"))
    assert bad.returncode != 0 and "after-ignition: species 'CO'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_validate_writes_the_surrogates_own_rollout_states(tmp_path):
    """--states-out: every recorded step of every condition, T paired with its own step's Y
    (each state keeps its fresh mixture's enthalpy, as the engine conserves it), for
    `deepkin sample --solver-states`; an unwritable path is one line before any work."""
    from mechanisms.states_file import read_states

    states_out = tmp_path / "rollout.states.h5"
    proc = run_cli("validate", "h2-air", "--T0", "1100,1300", "--pressure-atm", "2", "--phi", "0.8",
                   "--steps", "400", "--ignition-search-s", "0.01", "--after-ignition", "none",
                   "-o", str(tmp_path / "val"), "--states-out", str(states_out), "-q")
    assert proc.returncode == 0, proc.stderr
    states, species, origin = read_states(states_out)
    gas = ct.Solution("h2o2.yaml")
    assert species == gas.species_names and "2 conditions" in origin
    per_condition = len(states) // 2
    assert len(states) == 2 * per_condition and per_condition > 100
    for first, t0 in ((0, 1100.0), (per_condition, 1300.0)):
        assert states[first, 0] == t0 and states[first, 1] == 2 * ct.one_atm
        gas.TPY = states[first, 0], states[first, 1], states[first, 2:]
        h0 = gas.enthalpy_mass
        block = states[first:first + per_condition]
        assert block[:, 0].max() > t0 + 400  # it ignites within the rollout
        for row in block[::25]:
            gas.TPY = row[0], row[1], row[2:]
            assert abs(gas.enthalpy_mass - h0) <= 1e-5 * max(abs(h0), 1e3)
    bad = run_cli("validate", "h2-air", "--T0", "1100", "--pressure-atm", "2", "--phi", "0.8",
                  "--states-out", str(tmp_path / "no-dir" / "x.h5"), "-o", str(tmp_path / "v2"))
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"error: states-out: cannot write {tmp_path / 'no-dir' / 'x.h5'}: "
        f"directory {tmp_path / 'no-dir'} does not exist"]


def test_heat_release_bands_benchmark_accounts_for_every_hot_row(small_dataset):
    """benchmarks/heat_release_bands.py: every row above the model's frozen temperature is in
    exactly one band, each band's route shares add up to 100 %, and its ratio is finite."""
    from kinetics.model.registry import resolve_model

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "heat_release_bands.py"
    frozen = Integrator.load(resolve_model("h2-air"), device="cpu").meta.frozen_temperature_k
    inputs, _, _ = read_dataset(small_dataset)
    hot = int((inputs[:, 0] >= frozen).sum())
    proc = subprocess.run([sys.executable, str(script), str(small_dataset), "--model", "h2-air"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines()
             if (line.startswith("| ") and "–" in line) or line.startswith("| all ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    bands, total = cells[:-1], cells[-1]
    assert f"{hot} rows of" in proc.stdout and int(total[1]) == hot
    assert sum(int(b[1]) for b in bands) == hot
    for band in cells:
        assert np.isfinite(float(band[2])) and float(band[3]) >= 0
        assert abs(sum(float(v) for v in band[4:]) - 100.0) < 0.3
