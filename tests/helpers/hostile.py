"""Hostile and malformed traffic for a live server, and what the server must answer to it.

- :func:`hostile_cases`: requests that must be refused with a given 4xx and a message fragment
  (docs/service.md, "Errors"), built for one model's species order.
- :func:`stall`: a raw connection that stops sending at a chosen point; returns what the server
  answered and when it closed the connection.

The header flood and the memory of the server process (``memory_of``) are in
:mod:`service.header_flood` (``benchmarks/header_flood.py`` uses them too).
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from service.load_generator import uniform_states

GZIP_BOMB_BYTES = 1 << 30  # what the gzip bomb inflates to (a ~1 MB body)


@dataclass
class Case:
    """One request and the answer it must get: ``status`` and a fragment of the error line."""

    name: str
    path: str
    body: bytes
    status: int
    fragment: str
    headers: dict[str, str] = field(default_factory=dict)


def _v2(states: np.ndarray, parameters: dict | None = None, data: list | None = None) -> bytes:
    tensor = {"name": "STATES", "shape": list(states.shape), "datatype": "FP64",
              "data": data if data is not None else states.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **({"parameters": parameters} if parameters else {})}).encode()


def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to :data:`GZIP_BOMB_BYTES` zero bytes."""
    return gzip.compress(bytes(GZIP_BOMB_BYTES), compresslevel=9)


def hostile_cases(model: str, species: list[str], dt_s: float, bomb: bytes | None = None
                  ) -> list[Case]:
    """The refusals of one model (``species``: its order; ``dt_s``: its step, s). ``bomb``: a
    :func:`gzip_bomb` to include (it takes a moment to build)."""
    good = uniform_states(species, 3)
    step, infer = f"/v1/models/{model}/step", f"/v2/models/{model}/infer"
    octet, js = {"Content-Type": "application/octet-stream"}, {"Content-Type": "application/json"}

    def with_value(row: int, column: int, value: float) -> np.ndarray:
        states = good.copy()
        states[row, column] = value
        return states

    hot, dense, thin = with_value(1, 0, 1e6), with_value(2, 1, 1e300), with_value(0, 1, 1e-300)
    rows = good.tolist()
    cases = [
        Case("dt 1e300 (query)", f"{step}?dt=1e300", good.tobytes(), 422, "max_substeps", octet),
        Case("dt 1 s (query)", f"{step}?dt=1", good.tobytes(), 422, "max_substeps", octet),
        Case("dt 1e308 (query)", f"{step}?dt=1e308", good.tobytes(), 422, "dt:", octet),
        Case("dt 1e308 (v1 JSON)", step, json.dumps({"states": rows, "dt": 1e308}).encode(), 422, "dt:", js),
        Case("dt true (v2)", infer, _v2(good, {"dt": True}), 422, "parameters.dt", js),
        Case("dt 1e308 (v2)", infer, _v2(good, {"dt": 1e308}), 422, "dt:", js),
        Case("T 1e6 K (binary)", step, hot.tobytes(), 422, "row 1 has temperature 1e+06 K", octet),
        Case("P 1e300 Pa (binary)", step, dense.tobytes(), 422, "row 2 has pressure 1e+300 Pa", octet),
        Case("P 1e-300 Pa (JSON)", step, json.dumps({"states": thin.tolist()}).encode(), 422,
             "row 0 has pressure 1e-300 Pa", js),
        Case("T 1e6 K (v2)", infer, _v2(hot), 422, "row 1 has temperature", js),
        Case("T as a string (JSON)", step,
             json.dumps({"states": [["1200", *rows[0][1:]]]}).encode(), 422, "states.0.0", js),
        Case("T true (JSON)", step, json.dumps({"states": [[True, *rows[0][1:]]]}).encode(), 422,
             "states.0.0", js),
        Case("dt as a string (JSON)", step, json.dumps({"states": rows, "dt": "1e-6"}).encode(), 422,
             "dt", js),
        Case("T as a string (v2)", infer, _v2(good, data=["1200", *good.ravel().tolist()[1:]]), 422,
             "inputs.0.data", js),
        Case("mechanism_sha256 5 (v2)", infer, _v2(good, {"mechanism_sha256": 5}), 422,
             "parameters.mechanism_sha256", js),
        Case("text/plain (v2)", infer, _v2(good), 415, "content-type", {"Content-Type": "text/plain"}),
        Case("text/plain (v1)", step, good.tobytes(), 415, "content-type", {"Content-Type": "text/plain"}),
        Case("brotli (v1)", step, good.tobytes(), 415, "content-encoding", {"Content-Encoding": "br"}),
        Case("brotli (v2)", infer, _v2(good), 415, "content-encoding", {**js, "Content-Encoding": "br"}),
        Case("not gzip (v1)", step, good.tobytes(), 400, "not valid gzip", {"Content-Encoding": "gzip"}),
        Case("cells × substeps", f"{step}?dt={1000 * dt_s}", uniform_states(species, 70000).tobytes(),
             422, "max_cell_substeps", octet),
    ]
    if bomb is not None:
        cases.append(Case("gzip bomb (v2 JSON)", infer, bomb, 413, "once decompressed",
                          {**js, "Content-Encoding": "gzip"}))
        cases.append(Case("gzip bomb (v1 JSON)", step, bomb, 413, "once decompressed",
                          {**js, "Content-Encoding": "gzip"}))
    return cases


@dataclass
class Stall:
    """What a stalled connection got: the bytes the server sent and the seconds until it closed
    the connection (None: still open when the wait ended)."""

    answer: bytes
    closed_after_s: float | None

    @property
    def status(self) -> int | None:
        head = self.answer.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 and head[1].isdigit() else None

    @property
    def error(self) -> str | None:
        """The ``error`` line of a JSON answer (None when the answer is not one)."""
        head, _, body = self.answer.partition(b"\r\n\r\n")
        if b"content-type: application/json" not in head.lower():
            return None
        try:
            return json.loads(body).get("error")
        except ValueError:
            return None


def stall(url: str, sent: bytes, wait_s: float) -> Stall:
    """Open a connection, send ``sent`` and then nothing; read until the server closes it or
    ``wait_s`` has passed."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(0.2)
    t0 = time.monotonic()
    try:
        if sent:
            sock.sendall(sent)
        answer = b""
        while time.monotonic() - t0 < wait_s:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return Stall(answer, time.monotonic() - t0)
            if not chunk:
                return Stall(answer, time.monotonic() - t0)
            answer += chunk
        return Stall(answer, None)
    finally:
        sock.close()
