"""The integrator and the service on a CUDA GPU (skipped where there is none).

Run on a GPU machine with ``benchmarks/gpu_checks.sh`` (which also runs the GPU benchmarks).
"""

from __future__ import annotations

import cantera as ct
import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.registry import resolve_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _states() -> np.ndarray:
    """Igniting and near-equilibrium H2/air cells (h2o2.yaml order), 1–20 atm."""
    gas = ct.Solution("h2o2.yaml")
    rows = []
    for t0 in (1250.0, 1400.0):
        for p_atm in (1.0, 5.0, 20.0):
            for phi in (0.5, 1.0, 2.0):
                gas.TP = t0, p_atm * ct.one_atm
                gas.set_equivalence_ratio(phi, "H2:1", "O2:1,N2:3.76")
                rows.append(np.r_[gas.T, gas.P, gas.Y])
                gas.equilibrate("HP")
                rows.append(np.r_[gas.T, gas.P, gas.Y])
    return np.array(rows)


def test_shipped_model_on_the_gpu_agrees_with_the_cpu_and_conserves():
    path = resolve_model("h2-air")
    states = _states()
    cpu = Integrator.load(path, device="cpu").advance(states)
    gpu_integrator = Integrator.load(path, device="cuda")
    gpu = gpu_integrator.advance(torch.as_tensor(states, device="cuda"))
    assert gpu.states.device.type == "cuda"
    out = gpu.states.cpu().numpy()
    assert gpu.n_fallback == cpu.n_fallback
    # float32 networks on different hardware: close, not bit-equal.
    np.testing.assert_allclose(out[:, 0], cpu.states[:, 0], atol=0.5)
    np.testing.assert_allclose(out[:, 2:], cpu.states[:, 2:], atol=1e-6)
    np.testing.assert_allclose(out[:, 2:].sum(axis=1), 1.0, atol=1e-12)
    h0 = gpu_integrator.thermo.enthalpy(torch.as_tensor(states[:, 0], device="cuda"),
                                        torch.as_tensor(states[:, 2:], device="cuda"))
    h1 = gpu_integrator.thermo.enthalpy(gpu.states[:, 0], gpu.states[:, 2:])
    assert float((torch.abs(h1 - h0) / torch.clamp(torch.abs(h0), min=1e3)).max()) <= 1e-6
    assert gpu.n_tail_steps > 0  # the equilibrium cells take the near-equilibrium network


def test_numpy_in_numpy_out_on_the_gpu_and_bad_input_refused():
    from mechanisms.errors import InputError

    integrator = Integrator.load(resolve_model("h2-air"), device="cuda")
    states = _states()
    out = integrator.step(states)
    assert isinstance(out, np.ndarray) and out.dtype == states.dtype and out.shape == states.shape
    states[3, 4] = np.nan
    with pytest.raises(InputError, match="row 3 holds NaN"):
        integrator.step(torch.as_tensor(states, device="cuda"))


def test_service_on_the_gpu_matches_the_in_process_gpu_integrator():
    from service.client import Client
    from service.live_server import LiveServer

    path = resolve_model("h2-air")
    states = _states()
    expected = Integrator.load(path, device="cuda").step(states)
    with LiveServer(path.parent, "--device", "cuda") as srv:
        client = Client(srv.url)
        assert client.model("h2-air")["device"].startswith("cuda")
        reply = client.step("h2-air", states)
    assert np.array_equal(reply.states, expected)
