"""Soak: ten minutes of mixed valid and hostile traffic against one server (``slow``; run with
``python -m pytest -m slow tests/test_service_soak.py -s``; ``DEEPKIN_SOAK_S`` shortens it).

Valid clients post binary, JSON and KServe v2 steps all along; meanwhile one client sends every
refusal of :func:`tests.helpers.hostile.hostile_cases` (gzip bombs included), one sends steps
that run past the device-time budget, and one stalls connections (in the headers, in the body,
before a byte), leaves mid-body and sends garbage. At the end: no 5xx at all, every valid step
answered 200, the server's resident memory within 20 % of what it was after a warm-up pass of the
same traffic, and a normal request answered in under a second.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections import Counter

import httpx
import pytest

from service.header_flood import memory_of
from service.live_server import LiveServer
from service.load_generator import uniform_states
from tests.helpers.hostile import gzip_bomb, hostile_cases, stall
from tests.helpers.models import write_test_model

SOAK_S = float(os.environ.get("DEEPKIN_SOAK_S", 600))
WARM_UP_S = min(60.0, SOAK_S / 10)
TIMEOUT_S = 2.0  # the server's header, body and step timeouts


class Traffic:
    """Statuses seen by each kind of client (0: no answer: the server closed the connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter] = {}
        self.stop = threading.Event()

    def record(self, kind: str, status: int) -> None:
        with self.lock:
            self.statuses.setdefault(kind, Counter())[status] += 1

    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for status, n in c.items() if status >= 500)


def valid_client(url: str, species: list[str], dt_s: float, traffic: Traffic, seed: int) -> None:
    rng = random.Random(seed)
    binary, small = uniform_states(species, 2000), uniform_states(species, 20)
    v2 = json.dumps({"inputs": [{"name": "STATES", "shape": list(small.shape), "datatype": "FP64",
                                 "data": small.ravel().tolist()}]}).encode()
    with httpx.Client(base_url=url, timeout=60) as http:
        while not traffic.stop.is_set():
            kind = rng.choice(["binary", "json", "v2"])
            n = rng.randint(1, 5)
            if kind == "binary":
                r = http.post(f"/v1/models/h2/step?dt={n * dt_s}", content=binary.tobytes())
            elif kind == "json":
                r = http.post("/v1/models/h2/step", json={"states": small.tolist(), "dt": n * dt_s})
            else:
                r = http.post("/v2/models/h2/infer", content=v2, headers={"Content-Type": "application/json"})
            traffic.record(f"valid {kind}", r.status_code)


def hostile_client(url: str, species: list[str], dt_s: float, traffic: Traffic) -> None:
    cases = hostile_cases("h2", species, dt_s, gzip_bomb())
    rng = random.Random(1)
    with httpx.Client(base_url=url, timeout=60) as http:
        while not traffic.stop.is_set():
            case = rng.choice(cases)
            r = http.post(case.path, content=case.body, headers=case.headers)
            traffic.record("hostile" if r.status_code == case.status else f"hostile {case.name}",
                           r.status_code)


def budget_client(url: str, species: list[str], dt_s: float, traffic: Traffic) -> None:
    """Steps that run past the budget: many model steps, or cells that all fall back to Cantera."""
    long_step = uniform_states(species, 50)
    fallback = uniform_states(species, 400)
    fallback[:, 1] = 500.0  # Pa: below the training domain, so Cantera steps every cell
    with httpx.Client(base_url=url, timeout=60) as http:
        while not traffic.stop.is_set():
            r = http.post(f"/v1/models/h2/step?dt={1000 * dt_s}", content=long_step.tobytes())
            traffic.record("over budget", r.status_code)
            r = http.post(f"/v1/models/h2/step?dt={50 * dt_s}", content=fallback.tobytes())
            traffic.record("over budget", r.status_code)
            traffic.stop.wait(1.0)


def connection_abuser(url: str, species: list[str], traffic: Traffic) -> None:
    body = uniform_states(species, 100).tobytes()
    head = (f"POST /v1/models/h2/step HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
    sends = [b"POST /v1/models/h2/st", head[:-10], head, head + body[:500], b"",
             b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"]
    host, port = url.removeprefix("http://").split(":")
    rng = random.Random(2)
    while not traffic.stop.is_set():
        sent = rng.choice(sends)
        if rng.random() < 0.3:  # leave mid-body
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(head + body[: rng.randint(0, len(body) - 1)])
            traffic.record("left mid-body", 0)
            continue
        got = stall(url, sent, wait_s=TIMEOUT_S + 3)
        traffic.record("stalled", got.status or 0)


def rss_mb(server: LiveServer) -> float:
    return memory_of(server.process.pid)[0] / 2**20


@pytest.mark.slow
def test_soak_mixed_valid_and_hostile_traffic(tmp_path):
    write_test_model(tmp_path / "h2.safetensors")
    t = str(TIMEOUT_S)
    with LiveServer(tmp_path, "--threads", "1", "--step-timeout-s", t, "--header-timeout-s", t,
                    "--body-timeout-s", t) as server:
        info = httpx.get(f"{server.url}/v1/models/h2").json()
        species, dt_s = info["species"], info["dt_s"]
        at_start = rss_mb(server)
        traffic = Traffic()
        clients = [threading.Thread(target=valid_client, args=(server.url, species, dt_s, traffic, i))
                   for i in range(3)]
        clients += [threading.Thread(target=hostile_client, args=(server.url, species, dt_s, traffic)),
                    threading.Thread(target=budget_client, args=(server.url, species, dt_s, traffic)),
                    threading.Thread(target=connection_abuser, args=(server.url, species, traffic))]
        for c in clients:
            c.start()
        time.sleep(WARM_UP_S)
        after_warm_up = rss_mb(server)
        samples = []
        t_end = time.monotonic() + SOAK_S - WARM_UP_S
        while time.monotonic() < t_end:
            time.sleep(min(30.0, max(0.0, t_end - time.monotonic())))
            samples.append(rss_mb(server))
        traffic.stop.set()
        for c in clients:
            c.join(120)
        time.sleep(TIMEOUT_S + 1)  # stalled connections closed, queues empty
        at_end = rss_mb(server)
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/models/h2/step", content=uniform_states(species, 2000).tobytes(),
                       timeout=10)
        last_s = time.perf_counter() - t0
        alive = server.process.poll() is None
        log = server.log()
    counts = {kind: dict(c) for kind, c in sorted(traffic.statuses.items())}
    print(f"\nsoak {SOAK_S:.0f} s: {json.dumps(counts)}")
    print(f"RSS: {at_start:.0f} MiB at start, {after_warm_up:.0f} MiB after the {WARM_UP_S:.0f} s "
          f"warm-up, {max(samples, default=at_end):.0f} MiB highest sample, {at_end:.0f} MiB at the end; "
          f"last normal request {r.status_code} in {last_s * 1e3:.0f} ms")
    assert alive and "Traceback" not in log, log
    assert traffic.server_errors() == 0, counts
    assert all(set(c) == {200} for kind, c in counts.items() if kind.startswith("valid")), counts
    assert not [kind for kind in counts if kind.startswith("hostile ")], counts  # each got its 4xx
    assert at_end <= 1.2 * after_warm_up, (after_warm_up, at_end)
    assert r.status_code == 200 and last_s < 1.0
