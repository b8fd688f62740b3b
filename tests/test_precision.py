"""The networks' precision: float32 unless a model records that it was validated in bfloat16 and
the CPU multiplies bfloat16 natively (kinetics.step.forward.network_dtype); an explicit choice wins;
the model file refuses an unknown precision and format-4 files that carry format-5 fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.model_file import read_model_file
from kinetics.model.synthetic import write_random_model
from kinetics.step.forward import native_bfloat16_cpu, network_dtype, network_precision
from mechanisms import InputError
from service.live_server import LiveServer
from tests.conftest import run_cli
from tests.helpers.models import rewrite_model_file

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("precision")
    plain = write_random_model(d / "plain.safetensors", "h2o2.yaml", hidden=[32, 32])
    bf16 = rewrite_model_file(plain, d / "bf16.safetensors",
                              lambda raw: raw.__setitem__("inference_precision", "bfloat16"))
    return {"plain": plain, "bf16": bf16}


def test_auto_takes_the_models_precision_only_where_the_cpu_does_it_natively():
    native = native_bfloat16_cpu()
    assert network_dtype("auto", "float32", CPU) == torch.float32
    assert network_dtype("auto", "bfloat16", CPU) == (torch.bfloat16 if native else torch.float32)
    # GPUs keep float32 whatever the model says (the GPU path's dtype).
    assert network_dtype("auto", "bfloat16", torch.device("cuda")) == torch.float32
    assert network_dtype("float32", "bfloat16", CPU) == torch.float32
    assert network_dtype("bfloat16", "float32", CPU) == torch.bfloat16
    with pytest.raises(InputError, match="precision: must be auto, float32, bfloat16, "
                                         "bfloat16-hidden, got 'fp8'"):
        network_dtype("fp8", "float32", CPU)
    # bfloat16 in the hidden layers only: its first and last layers (and inputs) stay float32
    assert network_precision("auto", "bfloat16-hidden", CPU) == (
        "bfloat16-hidden" if native else "float32")
    assert network_precision("auto", "bfloat16-hidden", torch.device("cuda")) == "float32"
    assert network_dtype("bfloat16-hidden", "float32", CPU) == torch.float32


def test_the_integrator_runs_the_precision_it_reports(models):
    native = native_bfloat16_cpu()
    assert Integrator.load(models["plain"], device="cpu").precision == "float32"
    auto = Integrator.load(models["bf16"], device="cpu")
    assert auto.precision == ("bfloat16" if native else "float32")
    assert next(auto.head.network.parameters()).dtype == auto.dtype
    forced = Integrator.load(models["bf16"], device="cpu", dtype="float32")
    assert forced.precision == "float32"
    assert Integrator.load(models["plain"], device="cpu", dtype=torch.bfloat16).precision == "bfloat16"
    # Both precisions step the same cells to nearly the same states (random weights: a loose
    # bound; the shipped model's figures in bfloat16 are in docs/training.md).
    gas = forced.gas
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    gas.TP = 1500.0, 101325.0
    states = np.tile(np.r_[gas.T, gas.P, gas.Y], (4, 1))
    a = forced.advance(states).states
    b = Integrator.load(models["bf16"], device="cpu", dtype="bfloat16").advance(states).states
    assert np.abs(a[:, 0] - b[:, 0]).max() < 5.0 and np.abs(a[:, 2:] - b[:, 2:]).max() < 1e-2


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw.__setitem__("inference_precision", "float16"),
     "inference_precision must be float32, bfloat16, bfloat16-hidden, got 'float16'"),
    (lambda raw: raw.update(format_version=4, inference_precision="bfloat16"),
     "inference_precision needs format 5, the file is format 4"),
])
def test_the_model_file_refuses_a_precision_it_cannot_use(models, tmp_path, edit, message):
    bad = rewrite_model_file(models["plain"], tmp_path / "bad.safetensors", edit)
    with pytest.raises(InputError) as err:
        read_model_file(bad)
    assert message in str(err.value) and str(err.value) == str(err.value).splitlines()[0]


def test_validate_reports_the_precision_it_ran(models, tmp_path):
    out = tmp_path / "val"
    proc = run_cli("validate", str(models["plain"]), "--fuel", "H2:1", "--oxidizer", "O2:1,N2:3.76",
                   "--T0", "1400", "--pressure-atm", "1", "--phi", "1", "--steps", "50",
                   "--ignition-search-s", "0.001", "--precision", "float32", "-q", "-o", str(out))
    assert "networks in float32" in proc.stdout, proc.stderr
    assert "Networks in float32 on cpu." in (out / "report.md").read_text()
    bad = run_cli("validate", str(models["plain"]), "--precision", "half")
    assert bad.returncode != 0 and "half" in bad.stderr and "Traceback" not in bad.stderr


def test_the_service_serves_the_precision_it_is_told(models, tmp_path):
    import httpx

    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "bf16.safetensors").write_bytes(models["bf16"].read_bytes())
    native = "bfloat16" if native_bfloat16_cpu() else "float32"
    for args, env, expected in (((), None, native),
                                (("--precision", "float32"), None, "float32"),
                                ((), {"DEEPKIN_PRECISION": "float32"}, "float32")):
        with LiveServer(folder, *args, env=env) as srv:
            info = httpx.get(srv.url + "/v1/models/bf16", timeout=30).json()
        assert info["precision"] == expected, (args, env)


def test_every_list_of_precision_names_is_the_engines():
    """The names the command line, the service's settings, `deepkin openfoam export` and the model
    file accept (spelled out there so that they load without torch) are the engine's."""
    import typing

    from couplers.openfoam.commands import export_cmd
    from deepkin.cli import PRECISION_NAMES
    from kinetics.model.precisions import INFERENCE_PRECISIONS
    from kinetics.step.forward import NETWORK_PRECISIONS, precision_name
    from service.settings import ServiceSettings

    names = list(NETWORK_PRECISIONS)
    assert PRECISION_NAMES == names and list(INFERENCE_PRECISIONS) == names
    service = typing.get_args(ServiceSettings.model_fields["precision"].annotation)
    assert list(service) == ["auto", *names]
    option = next(p for p in export_cmd.params if p.name == "precision")
    assert list(option.type.choices) == ["auto", *names]
    assert [precision_name(*NETWORK_PRECISIONS[n]) for n in names] == names
    assert precision_name(torch.float64) == "float64"
