"""The model file refuses what is not consistent: the metadata checksum (format 3), the
load-time checks for every format, one line and exit 1 from every command that loads a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.model_file import (
    FORMAT_VERSION,
    network_state,
    non_network_tensors,
    read_model_file,
    save_model,
)
from kinetics.model.registry import SHIPPED_DIR
from kinetics.model.synthetic import write_random_model
from kinetics.networks.architectures import build_model
from mechanisms import InputError, load_mechanism
from service.live_server import free_port
from tests.conftest import run_cli
from tests.helpers.models import rewrite_model_file


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A random-weight h2o2 model (2 × 32), written in the newest format."""
    return write_random_model(tmp_path_factory.mktemp("model") / "m.safetensors", "h2o2.yaml",
                              hidden=[32, 32])


GRI_SPECIES = load_mechanism("gri30.yaml").species_names


def _set(key, value):
    return lambda raw: raw.__setitem__(key, value)


def _arch(key, value):
    return lambda raw: raw["architecture"].__setitem__(key, value)


def _tensor(name, value):
    return lambda tensors: tensors.__setitem__(name, value)


def _with_tail(route_below: float, weights: bool):
    """A near-equilibrium network: a copy of the main one (or no weights at all)."""
    def meta(raw):
        raw["tail"] = {"architecture": raw["architecture"], "output_transform": None,
                       "route_below": route_below, "training": {}}

    def tensors(t):
        for name in [n for n in t if n.startswith(("net.", "norm."))]:
            if weights or name.startswith("norm."):
                t[f"tail.{name}"] = t[name].clone()
    return meta, tensors


TAIL_ROUTE_ZERO = _with_tail(0.0, True)
TAIL_NO_WEIGHTS = _with_tail(0.03, False)
# Each: (edit of the metadata JSON, edit of the tensors, what the one line says).
INCONSISTENT = {
    "hidden sizes": (_arch("hidden", [64, 32]), None,
                     "tensor 'net.net.0.weight' has shape [32, 12]; architecture (hidden "
                     "[64, 32]) needs [64, 12]"),
    "negative dt": (_set("dt_s", -1e-6), None, "dt_s must be a number > 0 (s), got -1e-06"),
    "lambda 0": (_set("box_cox_lambda", 0), None, "box_cox_lambda must lie in (0, 1], got 0"),
    "another mechanism's species": (
        _set("species", GRI_SPECIES), None,
        "species do not match the embedded mechanism (53 listed, 10 in h2o2.yaml"),
    "n_in": (_arch("n_in", 13), None, "architecture.n_in must be 12 for 10 species, got 13"),
    "reversed domain": (_set("temperature_k", [3500.0, 300.0]), None,
                        "temperature_k must be [lo, hi] in K with 0 < lo <= hi"),
    "inert species": (_set("inert_species", ["XE"]), None, "inert_species must list species"),
    "frozen temperature": (_set("frozen_temperature_k", -1.0), None,
                           "frozen_temperature_k must be a number >= 0 (K)"),
    "output transform": (_set("output_transform", {"type": "cube"}), None,
                         "output_transform must be null or {type: signed_power"),
    "phase": (_set("phase", "nope"), None, "phase 'nope' cannot be built"),
    "normalisation width": (None, _tensor("norm.x_mean", torch.zeros(11, dtype=torch.float64)),
                            "tensor 'norm.x_mean' must be a float vector of 12"),
    "zero scale": (None, _tensor("norm.y_std", torch.zeros(10, dtype=torch.float64)),
                   "tensor 'norm.y_std' must be > 0 everywhere"),
    "NaN domain": (None, _tensor("domain.bct_max", torch.full((10,), float("nan"),
                                                              dtype=torch.float64)),
                   "tensor 'domain.bct_max' holds NaN or inf"),
    "stray tensor": (None, _tensor("extra.thing", torch.zeros(3)),
                     "tensor 'extra.thing' is not part of the model"),
    "tail route_below": (*TAIL_ROUTE_ZERO, "tail.route_below must be a number > 0, got 0.0"),
    "tail without weights": (*TAIL_NO_WEIGHTS, "tensor 'tail.net.net.0.weight' is missing"),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_inconsistent_metadata_is_one_line_in_every_format(model, tmp_path, case):
    meta_edit, tensor_edit, message = INCONSISTENT[case]
    old = rewrite_model_file(model, tmp_path / "old.safetensors", meta_edit, tensor_edit,
                             checksums="format-2")
    with pytest.raises(InputError) as err:
        read_model_file(old)
    assert str(err.value) == str(err.value).splitlines()[0]
    assert str(err.value).startswith(f"model: {old}: ") and message in str(err.value)
    edited = rewrite_model_file(model, tmp_path / "edited.safetensors", meta_edit, tensor_edit,
                                checksums="keep")
    with pytest.raises(InputError, match="corrupted|edited"):
        read_model_file(edited)


@pytest.mark.parametrize("edit", [_set("dt_s", 2e-6), _set("name", "other"),
                                  _set("pressure_pa", [1e3, 1e9])])
def test_a_consistent_edit_of_a_format_3_file_fails_its_checksum(model, tmp_path, edit):
    edited = rewrite_model_file(model, tmp_path / "e.safetensors", edit, checksums="keep")
    with pytest.raises(InputError, match="was edited .the metadata do not match their checksum"):
        read_model_file(edited)
    rewrite_model_file(model, tmp_path / "old.safetensors", edit, checksums="format-2")
    read_model_file(tmp_path / "old.safetensors")  # format 2: no metadata checksum to fail


def test_every_command_that_loads_a_model_refuses_it_with_one_line(model, small_dataset,
                                                                    tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    bad = rewrite_model_file(model, folder / "bad.safetensors", _set("dt_s", -1e-6), checksums="format-2")
    tail_cfg = tmp_path / "tail.yaml"
    tail_cfg.write_text(f"epochs: 1\nmodel: {{hidden: [8]}}\ntail_of: {bad}\n")
    commands = {
        "models list": ["models", "list", "--model-dir", str(folder)],
        "validate": ["validate", str(bad), "--steps", "10", "-q"],
        "serve": ["serve", "--model-dir", str(folder), "--port", str(free_port())],
        "train tail_of": ["train", str(small_dataset), "-c", str(tail_cfg), "-o",
                          str(tmp_path / "t.safetensors"), "-q"],
    }
    for name, args in commands.items():
        proc = run_cli(*args, timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 1, (name, proc.stderr)
        assert lines == [f"error: model: {bad}: dt_s must be a number > 0 (s), got -1e-06"], \
            (name, proc.stderr)


def test_the_shipped_format_2_file_loads_and_upgrades_to_the_newest_format_unchanged(tmp_path):
    shipped = SHIPPED_DIR / "h2-air.safetensors"
    meta, tensors, yaml_text = read_model_file(shipped)
    assert meta.format_version == 2 and meta.tail is not None
    network = build_model(meta.architecture)
    network.load_state_dict(network_state(tensors))
    extra = non_network_tensors(tensors)
    upgraded = tmp_path / "h2-air.safetensors"
    save_model(upgraded, network, meta, extra, yaml_text)
    meta3, tensors3, yaml3 = read_model_file(upgraded)
    assert meta3 == dataclasses.replace(meta, format_version=FORMAT_VERSION) and yaml3 == yaml_text
    assert meta3.domain is None  # its box check is kept: the file holds no occupancy grid
    assert tensors3.keys() == tensors.keys()
    assert all(torch.equal(tensors3[k], tensors[k]) for k in tensors)
    states = np.tile(np.r_[1500.0, 5 * 101325.0, 0.02, 1e-4, 1e-4, 0.2, 1e-3, 0.05, 1e-5, 1e-6,
                           0.0, 0.0], (8, 1))
    states[:, -1] = 1.0 - states[:, 2:-1].sum(axis=1)
    states[:, 0] += np.linspace(0.0, 700.0, 8)
    a = Integrator.load(shipped, device="cpu").step(states)
    b = Integrator.load(upgraded, device="cpu").step(states)
    np.testing.assert_array_equal(a, b)


def test_save_refuses_a_model_it_could_not_read_back(model, tmp_path):
    meta, tensors, yaml_text = read_model_file(model)
    network = build_model(meta.architecture)
    network.load_state_dict(network_state(tensors))
    extra = non_network_tensors(tensors)
    with pytest.raises(InputError, match="box_cox_lambda must lie in"):
        save_model(tmp_path / "x.safetensors", network,
                   dataclasses.replace(meta, box_cox_lambda=0.0), extra, yaml_text)
    assert not (tmp_path / "x.safetensors").exists()
