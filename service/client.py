"""Python client of the chemistry-step service: numpy in, numpy out.

Needs only numpy and httpx (no torch, no Cantera), so it runs wherever the CFD code runs::

    from service import Client

    with Client("http://127.0.0.1:8000") as client:
        info = client.model("h2-air")                  # species order, dt_s, mechanism sha256
        reply = client.step("h2-air", states)          # states: [n, 2+ns] float64 (or float32)
        new_states, n_fallback = reply.states, reply.n_fallback

The binary body is sent in chunks with an explicit ``Content-Length`` (httpx is slow on one large
``bytes`` body) and the answer is read into one preallocated, writable array.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np

CHUNK_BYTES = 1 << 20


class ServiceCallError(Exception):
    """The service answered with an error status; ``status`` and the service's one-line message."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class StepReply:
    """Advanced states ``[n, 2+ns]`` (the request's dtype) and what happened to the cells."""

    states: np.ndarray
    n_cells: int
    n_frozen: int
    n_fallback: int
    n_substeps: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # net_production_rates [n, ns]
    # (kmol/m³/s), heat_release_rate [n] (W/m³), at the returned states
    batch_requests: int = 1


class Client:
    """A connection (pool) to one service. ``token``: the bearer token, when the service wants one."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None,
                 timeout_s: float = 600.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._info: dict[str, dict] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- facts ---------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """Every served model's facts (see :meth:`model`)."""
        return self._get("/v1/models")["models"]

    def model(self, name: str) -> dict:
        """``name``'s species order, ``dt_s``, training domain, ``mechanism_sha256`` … (cached)."""
        if name not in self._info:
            self._info[name] = self._get(f"/v1/models/{name}")
        return self._info[name]

    def ready(self) -> bool:
        """True when the service answers ``/v2/health/ready`` with 200."""
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    # -- the step ------------------------------------------------------------------------------------
    def step(self, model: str, states: np.ndarray, dt: float | None = None,
             outputs: tuple[str, ...] | list[str] = (), mechanism_sha256: str | None = None,
             use_json: bool = False) -> StepReply:
        """Advance ``states`` ``[n, 2+ns]`` (T in K, P in Pa, Y in the model's species order) by
        ``dt`` s (default: the model's dt; else a whole multiple of it).

        ``outputs``: any of ``net_production_rates``, ``heat_release_rate``. ``mechanism_sha256``:
        the service refuses (409) a model of another mechanism. The answer has the dtype of
        ``states`` (float64 or float32). Raises :class:`ServiceCallError` for an error status
        (e.g. 422 naming a NaN row, 503 when the queue is full).
        """
        states = np.asarray(states)
        if states.dtype not in (np.float64, np.float32):
            states = states.astype(np.float64)
        if states.ndim != 2:
            raise ValueError(f"states: expected a 2-D array [n, 2+ns], got shape {states.shape}")
        if use_json:
            return self._step_json(model, states, dt, outputs, mechanism_sha256)
        states = np.ascontiguousarray(states, dtype=states.dtype.newbyteorder("<"))
        params = {}
        if dt is not None:
            params["dt"] = repr(float(dt))
        if outputs:
            params["outputs"] = ",".join(outputs)
        headers = {"Content-Type": "application/octet-stream",
                   "X-Dtype": "float32" if states.dtype == np.float32 else "float64",
                   "Content-Length": str(states.nbytes), "X-Cells": str(len(states))}
        if mechanism_sha256:
            headers["X-Mechanism-SHA256"] = mechanism_sha256
        with self._http.stream("POST", f"/v1/models/{model}/step", params=params, headers=headers,
                               content=_chunks(memoryview(states).cast("B"))) as response:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            body = _read_into_buffer(response)
        h = response.headers
        n, width = len(states), states.shape[1]
        itemsize = states.dtype.itemsize
        out = body[: n * width * itemsize].view(states.dtype).reshape(n, width)
        extra, offset = {}, n * width * itemsize
        names = [x for x in h.get("x-outputs", "").split(",") if x]
        for name in names:
            # T and P, then the species: spelled out here so that the client needs no Cantera
            # (mechanisms.state, the layout's home, imports it).
            cols = width - 2 if name == "net_production_rates" else 1
            size = n * cols * itemsize
            array = body[offset: offset + size].view(states.dtype)
            extra[name] = array.reshape(n, cols) if cols > 1 else array
            offset += size
        return StepReply(out, int(h["x-cells"]), int(h["x-frozen-cells"]), int(h["x-fallback-cells"]),
                         int(h["x-substeps"]), extra, int(h.get("x-batch-requests", 1)))

    def _step_json(self, model, states, dt, outputs, mechanism_sha256) -> StepReply:
        body = {"states": states.tolist(), "dtype": "float32" if states.dtype == np.float32 else "float64",
                "outputs": list(outputs)}
        if dt is not None:
            body["dt"] = float(dt)
        if mechanism_sha256:
            body["mechanism_sha256"] = mechanism_sha256
        # NaN/inf are sent as the non-standard tokens the service accepts (and refuses with a 422).
        response = self._http.post(f"/v1/models/{model}/step", content=json.dumps(body),
                                   headers={"Content-Type": "application/json"})
        if response.status_code != 200:
            raise _error(response)
        data = response.json()
        extra = {k: np.asarray(data[k], dtype=np.float64).astype(states.dtype)
                 for k in ("net_production_rates", "heat_release_rate") if k in data}
        return StepReply(np.asarray(data["states"], dtype=np.float64).astype(states.dtype)
                         .reshape(-1, states.shape[1]), data["n_cells"], data["n_frozen"],
                         data["n_fallback"], data["n_substeps"], extra)

    def _get(self, path: str) -> dict:
        response = self._http.get(path)
        if response.status_code != 200:
            raise _error(response)
        return response.json()


def _chunks(view: memoryview, size: int = CHUNK_BYTES) -> Iterator[memoryview]:
    for start in range(0, len(view), size):
        yield view[start: start + size]


def _read_into_buffer(response: httpx.Response) -> np.ndarray:
    """The body as one writable uint8 array, allocated once from ``Content-Length``."""
    length = response.headers.get("content-length")
    if length is None:
        return np.frombuffer(bytearray(response.read()), dtype=np.uint8)
    buffer = np.empty(int(length), dtype=np.uint8)
    pos = 0
    for chunk in response.iter_raw():
        buffer[pos: pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        pos += len(chunk)
    if pos != len(buffer):
        raise ServiceCallError(response.status_code, f"answer cut short: {pos} of {len(buffer)} bytes")
    return buffer


def _error(response: httpx.Response) -> ServiceCallError:
    try:
        message = response.json().get("error", response.text)
    except ValueError:
        message = response.text[:200] or response.reason_phrase
    retry = response.headers.get("retry-after")
    return ServiceCallError(response.status_code, message, float(retry) if retry else None)
