"""Dependencies shared by the routers: the service state, auth, model lookup, running a step."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from mechanisms.errors import InputError
from service.batcher import Batcher, JobResult
from service.device import Device
from service.errors import Forbidden, NotReady, ShuttingDown, Unauthorized, UnknownModel
from service.hosting import ModelHost
from service.metrics import Metrics
from service.settings import ServiceSettings
from service.wire import Disconnected


@dataclass
class ServiceState:
    """Everything the handlers use, built once at start-up (``app.state.service``)."""

    settings: ServiceSettings
    hosts: dict[str, ModelHost]
    batchers: dict[str, Batcher]
    metrics: Metrics
    device: Device | None = None
    ready: bool = False

    def check_ready(self) -> None:
        """:class:`NotReady` (503) before start-up, while shutting down, and while a device call
        has run longer than its budget (a wedged device)."""
        if not self.ready:
            raise NotReady("not ready: starting or shutting down")
        if self.device is not None and self.device.wedged:
            raise NotReady(f"not ready: a device call has run {self.device.busy_s:.1f} s, longer than "
                           f"step_timeout_s ({self.settings.step_timeout_s:g} s)")

    def drain(self, answer_within_s: float) -> None:
        """Begin a shutdown: not ready from now on; device calls stop, and requests still
        unanswered get a 503, ``answer_within_s`` from now."""
        self.ready = False
        if self.device is not None:
            self.device.drain(time.monotonic() + answer_within_s)
        error = ShuttingDown("the service is shutting down: the request was not answered within "
                             "the drain time")
        asyncio.get_running_loop().call_later(
            answer_within_s, lambda: [b.abandon(error) for b in self.batchers.values()])


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


def require_token(request: Request, state: State) -> None:
    """Bearer-token auth when tokens are configured: 401 without a token, 403 with a wrong one.

    The token is compared as bytes with each configured token's UTF-8 bytes, every one of them
    each time, through their SHA-256 digests (so the time taken tells neither where a wrong token
    differs nor how long a right one is)."""
    tokens = state.settings.tokens
    if not tokens:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("authorization: a bearer token is required (Authorization: Bearer <token>)")
    presented = hashlib.sha256(token.encode("latin-1")).digest()  # the header's bytes, as sent
    matched = False
    for configured in tokens:
        matched |= secrets.compare_digest(presented, hashlib.sha256(configured.encode()).digest())
    if not matched:
        raise Forbidden("authorization: the bearer token is not valid")


def single_query_values(request: Request) -> None:
    """A 422 naming the first query parameter given more than once (``?dt=a&dt=b``): which one
    was meant is not guessed."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            count = len(request.query_params.getlist(name))
            raise InputError(f"{name[:40]}: given {count} times in the query string; give it once")
        seen.add(name)


def model_host(name: str, state: State) -> ModelHost:
    host = state.hosts.get(name)
    if host is None:
        known = ", ".join(sorted(state.hosts)) or "none"
        raise UnknownModel(f"model: no model named '{name[:80]}' (served: {known})")
    return host


Host = Annotated[ModelHost, Depends(model_host)]


async def run_step(request: Request, state: ServiceState, host: ModelHost, states: np.ndarray,
                   n_substeps: int, outputs: tuple[str, ...]) -> JobResult:
    """Queue ``states`` on the model's batcher and wait for the answer.

    A client that disconnects while its request waits cancels it (a queued request never reaches
    the device) and :class:`Disconnected` is raised.
    """
    job = state.batchers[host.name].submit(states, n_substeps, outputs)
    watch = asyncio.ensure_future(request.receive())
    try:
        done, _ = await asyncio.wait({job.future, watch}, return_when=asyncio.FIRST_COMPLETED)
        if job.future in done:
            return job.future.result()
        if watch.result().get("type") == "http.disconnect":
            job.future.cancel()
            raise Disconnected()
        return await job.future
    finally:
        watch.cancel()
