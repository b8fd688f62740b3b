"""The chain a user runs: reduce a mechanism, sample a dataset on the reduced one, train a model on
it and step cells through a live ``deepkin serve`` — every stage the real command line."""

from __future__ import annotations

import numpy as np
import yaml

from mechanisms.loading import load_mechanism
from service import Client
from service.live_server import LiveServer
from tests.conftest import run_cli

REDUCE = {"model": "h2o2.yaml", "targets": ["H2", "O2"], "retained-species": ["N2"], "method": "DRGEP",
          "error": 10.0, "autoignition-conditions": [
              {"kind": "constant pressure", "temperature": [1000.0, 1200.0], "pressure": 1.0,
               "equivalence-ratio": 1.0, "fuel": {"H2": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}]}
ROWS = ["autoignition=800", "free_flame=0", "counterflow=0", "multiscale=400", "perturbed=0", "emcs=0",
        "equilibrium=0"]
TRAIN = {"name": "chain-h2", "model": {"type": "mlp", "hidden": [32, 32]}, "epochs": 2,
         "batch_size": 256, "block_rows": 2048, "learning_rate": 0.002, "frozen_temperature_k": 400.0}


def test_reduce_sample_train_serve_step(tmp_path):
    (tmp_path / "reduce.yaml").write_text(yaml.safe_dump(REDUCE, sort_keys=False))
    run_cli("reduce", "-i", str(tmp_path / "reduce.yaml"), "-o", str(tmp_path / "reduced"),
            "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "-q", check=True)
    reduced = tmp_path / "reduced" / "drgep.yaml"
    mech = load_mechanism(str(reduced))
    assert mech.n_species < 10 and "AR" not in mech.species_names  # a reduced mechanism

    data = tmp_path / "h2-reduced.h5"
    rows = [arg for row in ROWS for arg in ("--rows", row)]
    run_cli("sample", "-o", str(data), "--mechanism", str(reduced), "--fuel", "H2:1", "--oxidizer",
            "O2:1,N2:3.76", "--T0", "1000,1200", "--pressure-atm", "1", "--phi", "0.7,1.3", *rows,
            "--seed", "1", "--workers", "0", "-q", check=True)

    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    proc = run_cli("train", str(data), "-c", str(tmp_path / "train.yaml"), "-o",
                   str(models / "chain-h2.safetensors"), "--device", "cpu", "--threads", "1", "-q",
                   check=True)
    assert "best validation loss" in proc.stdout

    gas = mech.solution()
    states = np.empty((16, 2 + mech.n_species))
    for k, temp in enumerate(np.linspace(1100.0, 2200.0, len(states))):
        gas.TPX = temp, 101325.0, "H2:2, O2:1, N2:3.76, H2O:0.5, OH:0.01, H:0.01"
        states[k] = [gas.T, gas.P, *gas.Y]
    with LiveServer(models) as server, Client(server.url) as client:
        facts = client.model("chain-h2")
        assert facts["species"] == mech.species_names and facts["mechanism_sha256"] == mech.sha256
        reply = client.step("chain-h2", states)
    assert reply.states.shape == states.shape and reply.n_cells == len(states)
    assert np.isfinite(reply.states).all()
    np.testing.assert_allclose(reply.states[:, 2:].sum(axis=1), 1.0, atol=1e-6)
