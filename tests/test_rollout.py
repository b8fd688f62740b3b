"""The rollout rows and the rollout loss: ``deepkin sample`` writes trajectories of consecutive
Cantera steps (real Cantera, a real HDF5 file), the trainer finds their windows, follows a
network's own states along them with the model's step (the compiled step's arithmetic), and
trains main and near-equilibrium networks with the term (real ``deepkin train`` runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from kinetics.model.model_file import read_model_file
from kinetics.networks.transforms import box_cox, decode_output, log_pressure
from kinetics.step.compiled_step import CompiledStep
from kinetics.training.data import TrainingRows
from kinetics.training.rollout import CHAIN_RTOL, ModelStep, read_windows, rollout_loss
from kinetics.training.train import TrainConfig, _Objective, compute_normalisation
from mechanisms.dataset_check import verified_facts
from mechanisms.dataset_file import SOURCE_NAMES, BlockReader, read_dataset
from mechanisms.errors import InputError
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import LABEL_TOLERANCES, ReactorStep
from mechanisms.state import join_states, mass_fractions, pressure, temperature
from sampling.config import SamplingConfig
from tests.conftest import run_cli

ZERO = [f"--rows={s}=0" for s in SOURCE_NAMES]
H2 = ["--mechanism", "h2o2.yaml", "--fuel", "H2:1", "--T0", "1100,1300", "--pressure-atm", "1,5",
      "--phi", "0.7,1.5", "--task-rows", "60", "--seed", "11", "--workers", "0", "-q"]
STEPS = 5
TRAJECTORY_ROWS = 120  # 24 trajectories of 5 steps
ROLLOUT = int(SOURCE_NAMES.index("rollout"))
TINY = {"model": {"type": "mlp", "hidden": [32, 32], "activation": "gelu"},
        "output_transform": {"type": "signed_power", "lambda": 0.5}, "epochs": 2,
        "batch_size": 64, "val_fraction": 0.2, "seed": 3}


@pytest.fixture(scope="module")
def rollout_dataset(tmp_path_factory):
    """400 autoignition rows and 120 rollout rows (trajectories of 5 steps) of h2o2."""
    out = tmp_path_factory.mktemp("rollout") / "h2-rollout.h5"
    run_cli("sample", "-o", str(out), *H2, *ZERO, "--rows", "autoignition=400", "--rows",
            f"rollout={TRAJECTORY_ROWS}", "--rollout-steps", str(STEPS), check=True)
    return out


def _trained(tmp_path, dataset, name: str, **settings) -> tuple:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**TINY, **settings}))
    out = tmp_path / f"{name}.safetensors"
    proc = run_cli("train", str(dataset), "-c", str(config), "-o", str(out), "-q")
    return proc, out


def test_rollout_rows_are_labelled_trajectories(rollout_dataset):
    """Each trajectory's rows chain (a target is the next row's input), there are as many
    trajectories as the task sizes give, and every row is Cantera's own step of its input."""
    inputs, targets, source = read_dataset(rollout_dataset)
    rows = source == ROLLOUT
    assert rows.sum() == TRAJECTORY_ROWS
    assert (source[~rows] == SOURCE_NAMES.index("autoignition")).all()
    i, t = inputs[rows], targets[rows]
    gap = np.abs(i[1:] - t[:-1]).max(axis=1) / np.abs(t[:-1]).max(axis=1)
    chained = gap <= CHAIN_RTOL
    # 2 tasks of 60 rows: 12 trajectories of 5 each, so 23 boundaries among 119 neighbours
    assert chained.sum() == TRAJECTORY_ROWS - TRAJECTORY_ROWS // STEPS
    assert (~chained).nonzero()[0].tolist() == [k * STEPS - 1 for k in range(1, 24)]
    facts = verified_facts(rollout_dataset)
    gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
    stepper = ReactorStep(gas, facts.dt_s, LABEL_TOLERANCES)
    for k in (0, 1, 4, 57, 119):
        start, end = stepper.advance(i[k])
        np.testing.assert_allclose(end, t[k], rtol=1e-9, atol=1e-14)


def test_a_config_without_rollout_rows_keeps_its_identity(tmp_path):
    """A dataset made before the source existed is resumed and appended to by configs that
    match it: the rollout section stays out of the config's data until it is used."""
    assert "rollout" not in SamplingConfig().to_dict()
    assert "rollout" not in SamplingConfig().to_dict()["rows"]
    used = SamplingConfig.from_dict({"rows": {"rollout": 40}, "rollout": {"steps": 4}})
    assert used.to_dict()["rollout"] == {"steps": 4, "alpha": 0.0}
    for bad, field in (({"steps": 0}, "rollout.steps"), ({"alpha": 2.0}, "rollout.alpha"),
                       ({"stepz": 3}, "rollout.stepz")):
        with pytest.raises(InputError, match=field.replace(".", r"\.")):
            SamplingConfig.from_dict({"rows": {"rollout": 40}, "rollout": bad})
    proc = run_cli("sample", "-o", str(tmp_path / "x.h5"), *H2, *ZERO, "--rows",
                   "autoignition=20", "--rows", "rollout=20", "--rollout-steps", "0")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "rollout.steps" in lines[0], proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_windows_follow_the_trajectories(rollout_dataset):
    """Every window of k steps along each trajectory, and none across two."""
    facts = verified_facts(rollout_dataset)
    windows = read_windows(facts, 3, 65536, 0.2, 3)
    assert len(windows) == 24 * (STEPS - 3 + 1)
    batch = windows.batch(np.arange(len(windows)))  # [n, 4, width]
    inputs, targets, source = read_dataset(rollout_dataset)
    i, t = inputs[source == ROLLOUT], targets[source == ROLLOUT]
    pairs = {tuple(row): tuple(nxt) for row, nxt in zip(i, t)}
    for window in batch:
        for j in range(3):  # each state's labelled next state is the window's next state
            np.testing.assert_allclose(pairs[tuple(window[j])], window[j + 1], rtol=CHAIN_RTOL)
    # the validation flag of a window is its first row's (the trainer's split)
    rows = TrainingRows(BlockReader(facts, 65536, ["rollout"]), 0.2, 3)
    _, _, is_val = next(rows.blocks())
    first_rows = [k for k in range(TRAJECTORY_ROWS) if k % STEPS <= STEPS - 3]
    np.testing.assert_array_equal(windows.is_val, is_val[first_rows])
    with pytest.raises(InputError, match="rollout_steps"):
        read_windows(facts, STEPS + 1, 65536, 0.2, 3)


def test_model_step_is_the_compiled_step(rollout_dataset, tmp_path):
    """Given the same rates, the training's model step gives the compiled step's T' and Y'."""
    proc, out = _trained(tmp_path, rollout_dataset, "main")
    assert proc.returncode == 0, proc.stderr
    meta, tensors, yaml_text = read_model_file(out)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    compiled = CompiledStep.from_model(meta, tensors, gas)
    inputs, _, _ = read_dataset(rollout_dataset)
    states = torch.as_tensor(inputs[::7], dtype=torch.float64)
    t, p, y = temperature(states), pressure(states), mass_fractions(states)
    t_new, y_new, ok, _ = compiled.model_step(t, p, y)
    rates, _ = compiled.rates(t, p, box_cox(y, meta.box_cox_lambda))
    mine, mine_ok = ModelStep(gas, meta.box_cox_lambda, meta.dt_s, torch.device("cpu")).advance(
        states, rates)
    assert ok.sum() > 0.9 * len(ok)
    both = ok & mine_ok
    assert both.sum() == ok.sum()
    np.testing.assert_allclose(temperature(mine)[both], t_new[both], rtol=0, atol=1e-8)
    np.testing.assert_allclose(mass_fractions(mine)[both], y_new[both], rtol=0, atol=1e-13)


def test_rollout_loss_scores_the_networks_own_trajectory(rollout_dataset):
    """Windows that are the network's own rollout (its rates, the model's step) score 0; on
    Cantera's windows the loss is positive, and its gradient is finite and reaches the weights
    through the states (a window of 3 steps differs from three windows of one)."""
    facts = verified_facts(rollout_dataset)
    config = TrainConfig.from_dict({**TINY, "rollout_steps": 3})
    rows = TrainingRows(BlockReader(facts, 65536), 0.2, 3)
    norm = compute_normalisation(rows, config.box_cox_lambda).zero_centred_targets()
    objective = _Objective(config, facts, norm, torch.device("cpu"))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.Linear(16, 10))
    gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
    step = ModelStep(gas, config.box_cox_lambda, facts.dt_s, torch.device("cpu"))
    windows = read_windows(facts, 3, 65536, 0.2, 3)
    cantera = windows.batch(np.arange(len(windows)))
    with torch.no_grad():  # the network's own rollout from the same first states
        own = [torch.as_tensor(cantera[:, 0])]
        for _ in range(3):
            s = own[-1]
            x = join_states(temperature(s), log_pressure(pressure(s)),
                            box_cox(mass_fractions(s), config.box_cox_lambda))
            out = net(((x - objective.x_mean) / objective.x_std).float())
            rate = decode_output(out.double(), objective.transform) * objective.r_std \
                + objective.r_mean
            nxt, ok = step.advance(s, rate)
            assert ok.all()
            own.append(nxt)
        mine = torch.stack(own, dim=1).numpy()
        assert float(rollout_loss(net, mine, objective, step)) < 1e-9
    loss = rollout_loss(net, cantera, objective, step)
    assert loss.item() > 0.01
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    net.zero_grad()
    first_only = rollout_loss(net, cantera[:, :2], objective, step)
    assert first_only.item() != pytest.approx(loss.item(), rel=1e-6)


def test_training_with_the_rollout_loss(rollout_dataset, small_tail_dataset, tmp_path):
    """``deepkin train`` with rollout_steps trains a main network and a near-equilibrium one on
    the windows its main network routes to it (the compiled step's routing); a dataset without
    rollout rows, and several training processes, are refused in one line."""
    plain, plain_out = _trained(tmp_path, rollout_dataset, "plain")
    rolled, rolled_out = _trained(tmp_path, rollout_dataset, "rolled", rollout_steps=3,
                                  rollout_loss_weight=2.0)
    assert plain.returncode == 0 and rolled.returncode == 0, rolled.stderr
    plain_log = (tmp_path / "plain.log.csv").read_text().splitlines()
    rolled_log = (tmp_path / "rolled.log.csv").read_text().splitlines()
    assert len(rolled_log) == 3 and all(np.isfinite(float(v)) for v in rolled_log[-1].split(",")[1:3])
    # the same epochs, one-step loss plus the weighted rollout term: a larger loss
    assert float(rolled_log[-1].split(",")[2]) > float(plain_log[-1].split(",")[2])
    tail, tail_out = _trained(tmp_path, rollout_dataset, "tail", rollout_steps=2,
                              tail_of=str(rolled_out), route_below=0.5, route_margin=1.0)
    assert tail.returncode == 0, tail.stderr
    meta, tensors, yaml_text = read_model_file(tail_out)
    assert meta.tail is not None
    # what the trainer followed: the windows whose first state the main network routes here
    from kinetics.training.train import _main_model

    facts = verified_facts(rollout_dataset)
    config = TrainConfig.from_dict({**TINY, "tail_of": str(rolled_out), "route_below": 0.5,
                                    "route_margin": 1.0})
    windows = read_windows(facts, 2, 65536, 0.2, 3)
    first = windows.states[windows.starts]
    here = _main_model(config, facts).routes_here(first, 0.5, 0.5)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    s = torch.as_tensor(first)
    _, route = CompiledStep.from_model(meta, tensors, gas).rates(
        temperature(s), pressure(s), box_cox(mass_fractions(s), meta.box_cox_lambda))
    np.testing.assert_array_equal(here, (route == CompiledStep.ROUTE_TAIL).numpy())
    assert here.any()
    none, _ = _trained(tmp_path, rollout_dataset, "none", rollout_steps=2,
                       tail_of=str(rolled_out), route_below=1e-12, route_margin=1e12)
    assert none.returncode != 0 and "routes no rollout window" in none.stderr, none.stderr
    refused, _ = _trained(tmp_path, small_tail_dataset, "refused", rollout_steps=2)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and "rollout_steps" in lines[0], \
        refused.stderr


@pytest.fixture(scope="module")
def small_tail_dataset(tmp_path_factory):
    """A dataset without rollout rows."""
    out = tmp_path_factory.mktemp("plain") / "h2-plain.h5"
    run_cli("sample", "-o", str(out), *H2, *ZERO, "--rows", "autoignition=200", check=True)
    return out
