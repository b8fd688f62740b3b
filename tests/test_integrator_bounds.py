"""The integrator's own bounds: dt → substeps without overflow, the physical range of a state, and
the ``stop`` callable that ends a call between model steps (what the service's budget uses)."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator, StepInterrupted
from mechanisms.errors import InputError
from mechanisms.state import PRESSURE_RANGE_PA
from service.load_generator import uniform_states
from tests.helpers.models import write_test_model


@pytest.fixture(scope="module")
def integrator(tmp_path_factory) -> Integrator:
    return Integrator.load(write_test_model(tmp_path_factory.mktemp("m") / "h2.safetensors"), device="cpu")


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> Integrator:
    path = write_test_model(tmp_path_factory.mktemp("f") / "h2.safetensors", frozen_temperature_k=1100.0)
    return Integrator.load(path, device="cpu")


def test_a_huge_dt_is_an_input_error_not_an_overflow(integrator):
    assert integrator.substeps(1e300) == round(1e300 / integrator.dt_s)  # a count; the service caps it
    for dt, message in ((1e308, "too many model steps"), (True, "must be a number > 0"),
                        (float("inf"), "must be a number > 0")):
        with pytest.raises(InputError, match=message):
            integrator.substeps(dt)


@pytest.mark.parametrize("row,column,value,message", [
    (0, 0, 1e6, "row 0 has temperature 1e+06 K, outside the mechanism's thermo range 300–3500 K"),
    (4100, 0, 250.0, "row 4100 has temperature 250 K"),
    (9000, 1, 1e300, "row 9000 has pressure 1e+300 Pa, outside 1–1e+09 Pa"),
    (5, 1, 1e-300, "row 5 has pressure 1e-300 Pa"),
])
def test_impossible_states_are_named_by_row_and_field(integrator, row, column, value, message):
    states = uniform_states(integrator.species, 10000)
    integrator.check_states(torch.from_numpy(states))
    states[row, column] = value
    for given in (states, torch.from_numpy(states.copy())):
        with pytest.raises(InputError, match=re.escape(message)):
            integrator.step(given)


def test_frozen_cells_only_need_a_positive_temperature(frozen):
    states = uniform_states(frozen.species, 6, temperature_k=250.0)  # below 300 K, frozen below 1100 K
    states[3, 0] = 1500.0
    result = frozen.advance(states)
    assert result.n_frozen == 5 and np.array_equal(result.states[0], states[0])
    states[4, 0] = 1000.0  # in the thermo range, frozen
    frozen.step(states)
    assert PRESSURE_RANGE_PA == (1.0, 1e9)


def _stop_after(n: int) -> tuple[list, Callable[[], bool]]:
    """A ``stop`` callable that says True from its ``n+1``-th call on, and the list of its calls."""
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > n

    return asked, stop


def test_stop_ends_a_call_between_model_steps_with_the_same_arithmetic(integrator):
    states = uniform_states(integrator.species, 8)
    _, after_three = _stop_after(3)
    with pytest.raises(StepInterrupted) as stopped:
        integrator.advance(states, 10, stop=after_three)
    assert (stopped.value.substeps_done, stopped.value.n_substeps) == (3, 10)
    assert np.array_equal(integrator.advance(states, 3, stop=lambda: False).states,
                          integrator.advance(states, 3).states)


def test_stop_is_asked_between_fallback_cells(integrator):
    states = uniform_states(integrator.species, 50)
    states[:, 1] = 500.0  # Pa: below the training domain, every cell takes a Cantera step
    asked, after_ten = _stop_after(10)
    with pytest.raises(StepInterrupted) as stopped:
        integrator.advance(states, 1, stop=after_ten)
    assert stopped.value.substeps_done == 0 and len(asked) == 11  # 1 before the step, 10 cells


def test_the_thermo_range_reaches_up_to_the_hottest_training_state(tmp_path):
    """GRI-3.0's thermo range ends at 3000 K (CH3O's fit; the others reach 3500 K or more), but
    methane/air at 20 atm and 1600 K burns at 2982 K and a network step may pass 3000 K: a model
    trained on states up to 3100 K accepts cells there; one trained up to 2900 K refuses them,
    naming the mechanism's own range."""
    hot = Integrator.load(write_test_model(tmp_path / "hot.safetensors", mechanism="gri30.yaml",
                                           temperature_k=(300.0, 3100.0)), device="cpu")
    cool = Integrator.load(write_test_model(tmp_path / "cool.safetensors", mechanism="gri30.yaml",
                                            temperature_k=(300.0, 2900.0)), device="cpu")
    assert hot.thermo_range_k == (300.0, 3100.0) and cool.thermo_range_k == (300.0, 3000.0)
    states = uniform_states(hot.species, 4, temperature_k=3050.0)
    assert hot.advance(states).states.shape == states.shape
    with pytest.raises(InputError, match=re.escape(
            "row 0 has temperature 3050 K, outside the mechanism's thermo range 300–3000 K")):
        cool.step(states)
    states[2, 0] = 3200.0
    with pytest.raises(InputError, match=re.escape(
            "row 2 has temperature 3200 K, outside 300–3100 K (the mechanism's thermo range "
            "300–3000 K up to the model's hottest training state)")):
        hot.step(states)
