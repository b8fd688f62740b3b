"""A bounded load test on 127.0.0.1: below capacity no errors; above capacity 503s (never a crash or
another error), and the server recovers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.live_server import LiveServer
from service.load_generator import run_load, uniform_states
from tests.helpers.models import write_test_model


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("load-models")
    write_test_model(d / "h2.safetensors")
    with LiveServer(d, "--max-queue-requests", "4", "--max-batch-requests", "2", "--threads", "1") as srv:
        yield srv


def test_load_below_and_above_capacity_then_recovery(live):
    species = httpx.get(f"{live.url}/v1/models/h2").json()["species"]
    states = uniform_states(species, 2000)

    def load(concurrency: int, duration_s: float, max_requests: int):
        return asyncio.run(run_load(live.url, "h2", states, concurrency, duration_s, max_requests))

    below = load(2, 2.0, 200)
    print("\n" + below.line("below capacity"))
    assert below.ok > 0 and below.rejected == 0 and below.errors == 0, below.statuses

    above = load(48, 3.0, 2000)
    print(above.line("above capacity"))
    assert above.rejected > 0, above.statuses  # the bounded queue refused work ...
    assert above.errors == 0, above.statuses  # ... with 503s only: no 5xx, no dropped connections
    assert above.ok > 0

    after = load(2, 1.5, 200)
    print(after.line("recovered"))
    assert after.ok > 0 and after.rejected == 0 and after.errors == 0, after.statuses
    assert live.process.poll() is None  # still running
    assert "Traceback" not in live.log()
