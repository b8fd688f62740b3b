"""The integrator's hot-path arithmetic against plain references: the blocked (oneDNN) network
forward, NASA-7 properties and the enthalpy inversion, the whole-power Box-Cox inverse, and the
flame state mixes of the step benchmark. No timings here (the benchmark prints ratios)."""

from __future__ import annotations

import cantera as ct
import numpy as np
import pytest
import torch

from benchmarks.state_mixes import on_uniform_grid
from kinetics.networks.architectures import build_model
from kinetics.networks.transforms import _whole_power, box_cox, box_cox_inverse
from kinetics.step.forward import BLOCK_ROWS_RANGE, BlockedForward, block_rows
from kinetics.step.thermo import Nasa7

CPU = torch.device("cpu")


@pytest.mark.parametrize("arch", [
    {"type": "mlp", "hidden": [64, 48], "activation": "gelu"},
    {"type": "mlp", "hidden": [40], "activation": "silu"},
    {"type": "mlp", "hidden": [32, 32], "activation": "tanh"},
    {"type": "mscale", "hidden": [16, 16], "scales": [1.0, 4.0]},
])
@pytest.mark.parametrize("rows", [0, 1, 7, 1025, 20000])
def test_blocked_forward_equals_the_network(arch, rows):
    torch.manual_seed(0)
    net = build_model({"n_in": 12, "n_out": 10, **arch}).eval()
    forward = BlockedForward(net, CPU, torch.float32)
    z = torch.randn(rows, 12)
    with torch.no_grad():
        got, expected = forward(z), net(z)
    assert got.shape == expected.shape == (rows, 10)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_rows_result_does_not_depend_on_its_block():
    """Rows give the same bits wherever they sit in a batch (blocks of two rows or more)."""
    torch.manual_seed(1)
    net = build_model({"type": "mlp", "n_in": 12, "n_out": 10, "hidden": [400, 400, 400]}).eval()
    forward = BlockedForward(net, CPU, torch.float32)
    z = torch.randn(3000, 12)
    with torch.no_grad():
        whole = forward(z)
        assert torch.equal(forward(z[5:2905]), whole[5:2905])
        assert torch.equal(forward(z[[7, 3, 2999]]), whole[[7, 3, 2999]])


def test_block_rows_follow_the_widest_layer():
    low, high = BLOCK_ROWS_RANGE
    sizes = {(32, 32): high, (64, 64): 6400, (400, 400, 400): 1024, (1600, 800, 400): low}
    for hidden, rows in sizes.items():
        assert block_rows(build_model({"n_in": 12, "n_out": 10, "hidden": list(hidden)})) == rows


def test_nasa7_matches_cantera_and_inverts_enthalpy():
    gas = ct.Solution("h2o2.yaml")
    thermo = Nasa7(gas)
    rng = np.random.default_rng(0)
    t = torch.as_tensor(rng.uniform(300.0, 3400.0, 200))
    y = torch.as_tensor(rng.dirichlet(np.ones(gas.n_species), 200))
    h, cp = thermo.enthalpy(t, y), thermo.cp(t, y)
    for i in range(0, 200, 20):
        gas.TPY = float(t[i]), ct.one_atm, y[i].numpy()
        assert abs(float(h[i]) - gas.enthalpy_mass) <= 1e-9 * max(abs(gas.enthalpy_mass), 1e4)
        assert float(cp[i]) == pytest.approx(gas.cp_mass, rel=1e-12)
    guess = t + torch.as_tensor(rng.uniform(-300.0, 300.0, 200))
    t_back, converged = thermo.temperature(h, y, guess)
    assert bool(converged.all())
    torch.testing.assert_close(t_back, t, rtol=1e-11, atol=0.0)
    # Species properties at the guess, handed in, give the same answer.
    t_again, _ = thermo.temperature(h, y, guess, guess_properties=thermo.species_properties(guess))
    assert torch.equal(t_again, t_back)


@pytest.mark.parametrize("k", [1, 2, 3, 10, 17, 64])
def test_whole_power_is_pow(k):
    x = torch.rand(1000, dtype=torch.float64)
    torch.testing.assert_close(_whole_power(x, k), x ** k, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("lam", [0.1, 0.25, 0.3])
def test_box_cox_inverse_by_squaring_or_pow(lam):
    y = torch.as_tensor(np.logspace(-12, 0, 200))
    torch.testing.assert_close(box_cox_inverse(box_cox(y, lam), lam), y, rtol=1e-9, atol=0.0)


def test_a_profile_on_a_uniform_grid():
    z = np.array([0.0, 1e-3, 2e-3])
    states = np.array([[300.0, 1e5, 1.0, 0.0], [1300.0, 1e5, 0.5, 0.5], [2300.0, 1e5, 0.0, 1.0]])
    cells = on_uniform_grid(z, states, 1e-4)
    assert cells.shape == (20, 4)
    np.testing.assert_allclose(cells[:, 0], 300.0 + 1e6 * (np.arange(20) + 0.5) * 1e-4)
    np.testing.assert_allclose(cells[:, 2:].sum(axis=1), 1.0)
