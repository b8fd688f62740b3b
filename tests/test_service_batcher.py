"""The dynamic batcher in-process (no HTTP): what reaches ``Integrator.advance`` and what comes back.

A request served alone goes to the integrator as received (checked there, bit for bit a direct
call); merged requests are each checked once, in float64, concatenated once, advanced without a
second check and cast back to their own dtype once.
"""

from __future__ import annotations

import asyncio

import cantera as ct
import numpy as np
import pytest

from mechanisms.errors import InputError
from service.batcher import Batcher
from service.device import Device
from service.hosting import ModelHost
from service.settings import ServiceSettings
from tests.helpers.models import write_test_model


def _states(n: int, seed: int) -> np.ndarray:
    """``[n, 12]`` hydrogen/air states (h2o2.yaml order), 1000–2000 K, 1–5 atm."""
    gas = ct.Solution("h2o2.yaml")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        gas.TPX = rng.uniform(1000, 2000), rng.uniform(1, 5) * ct.one_atm, "H2:2,O2:1,N2:3.76"
        rows.append(np.r_[gas.T, gas.P, gas.Y])
    return np.array(rows)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return ModelHost.load("h2", write_test_model(tmp_path_factory.mktemp("m") / "h2.safetensors"), "cpu")


class Recorder:
    """Wraps the integrator's ``check_states`` and ``advance`` to record their calls."""

    def __init__(self, integrator, monkeypatch):
        self.checks, self.advances = [], []
        check, advance = integrator.check_states, integrator.advance

        def recorded_check(states):
            self.checks.append(states)
            return check(states)

        def recorded_advance(states, n_substeps=1, check=True, stop=None):
            self.advances.append((states, n_substeps, check))
            return advance(states, n_substeps, check=check, stop=stop)

        monkeypatch.setattr(integrator, "check_states", recorded_check)
        monkeypatch.setattr(integrator, "advance", recorded_advance)


def _serve_together(host: ModelHost, requests: list[np.ndarray], n_substeps: int,
                    step_timeout_s: float = 60.0) -> list:
    """Queue every request before the batcher runs (one batch); the answers or errors, in order."""
    async def main():
        device = Device(1, step_timeout_s)
        settings = ServiceSettings(max_batch_cells=10**6, max_batch_requests=16, max_queue_requests=16,
                                   max_queue_cells=10**6)
        batcher = Batcher(host, device, settings)
        batcher.start()
        jobs = [batcher.submit(states, n_substeps) for states in requests]
        answers = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
        await batcher.stop(5.0)
        device.close()
        return answers

    return asyncio.run(main())


def test_a_request_alone_reaches_the_integrator_as_received(host, monkeypatch):
    states = _states(20, seed=1).astype(np.float32)
    expected = host.integrator.advance(states, 2)
    calls = Recorder(host.integrator, monkeypatch)
    (answer,) = _serve_together(host, [states], n_substeps=2)
    assert len(calls.advances) == 1
    given, n_substeps, check = calls.advances[0]
    assert given is states and n_substeps == 2 and check
    assert answer.states.dtype == np.float32 and np.array_equal(answer.states, expected.states)
    assert (answer.n_substeps, answer.batch_requests) == (2, 1)


def test_merged_requests_are_checked_once_and_advanced_as_one_float64_concatenation(host, monkeypatch):
    good = [_states(7, seed=2), _states(5, seed=3).astype(np.float32), _states(9, seed=4)]
    bad = _states(4, seed=5)
    bad[3, 0] = np.nan
    requests = [good[0], good[1], bad, good[2]]
    merged = np.concatenate([r.astype(np.float64) for r in good])
    expected = host.integrator.advance(merged, 3, check=False).states
    calls = Recorder(host.integrator, monkeypatch)
    answers = _serve_together(host, requests, n_substeps=3)

    assert isinstance(answers[2], InputError) and "row 3 holds NaN" in str(answers[2])
    assert len(calls.checks) == len(requests)  # each request once, none of them again merged
    assert all(c.dtype == np.float64 for c in calls.checks)  # numpy, checked in place
    assert len(calls.advances) == 1
    given, n_substeps, check = calls.advances[0]
    assert given.dtype == np.float64 and np.array_equal(given, merged)
    assert n_substeps == 3 and not check
    offset = 0
    for states, answer in zip(good, [answers[0], answers[1], answers[3]]):
        rows = slice(offset, offset + len(states))
        offset += len(states)
        assert answer.states.dtype == states.dtype
        assert np.array_equal(answer.states, expected[rows].astype(states.dtype))
        assert (answer.n_cells, answer.batch_requests, answer.batch_cells) == (len(states), 3, 21)


def test_a_merged_call_past_its_budget_is_retried_one_request_at_a_time(host, monkeypatch):
    """A request whose cells fall back to Cantera (P below the training domain) makes the merged
    call run past its 0.5 s budget: the small request it was merged with is served alone (as
    received, bit for bit), the big one alone still needs more and gets a 422 naming the budget."""
    small = _states(5, seed=6)
    big = _states(3000, seed=7)
    big[:, 1] = 500.0  # Pa: inside PRESSURE_RANGE_PA, outside the training domain (1e3–1e8 Pa)
    expected = host.integrator.advance(small, 4)
    calls = Recorder(host.integrator, monkeypatch)
    answers = _serve_together(host, [big, small], n_substeps=4, step_timeout_s=0.5)
    assert [len(states) for states, _, _ in calls.advances] == [3005, 3000, 5]
    assert calls.advances[2][0] is small and calls.advances[2][2]  # alone, checked as received
    assert isinstance(answers[0], InputError) and "step_timeout_s" in str(answers[0])
    assert np.array_equal(answers[1].states, expected.states) and answers[1].batch_requests == 1
