"""The domain side of the service: hosted models and the dynamic batcher.

A :class:`ModelHost` wraps one :class:`~kinetics.integrator.Integrator` (its facts, the mechanism
checks, the optional Cantera outputs). A :class:`Batcher` per model merges requests that are queued
together into one ``Integrator.advance`` call on a single device thread, bounded by a cell cap and a
request cap; its queue is bounded too (:class:`~service.errors.QueueFull` → 503).

States are ``[n, 2+ns]`` arrays ``[T (K), P (Pa), Y_1..Y_ns]`` (float64 or float32). A request
served alone is advanced exactly as ``Integrator.advance`` advances the same array (bit for bit);
a request merged with others is advanced as part of their concatenation, which can differ from a
solo call in the last bit (the network's and NASA-7's kernels and the Newton iteration count depend
on the batch; measured ≤ 1 ulp-scale, ~1e-13 K).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.integrator import Integrator, StepResult
from kinetics.registry import SHIPPED_DIR, list_models
from mechanisms.errors import InputError, cantera_message
from service.errors import MechanismMismatch, QueueFull, ShuttingDown

log = logging.getLogger("deepkin.service")

OUTPUTS = ("net_production_rates", "heat_release_rate")
"""Optional outputs, evaluated by Cantera at the returned states: net production rates
``[n, ns]`` (kmol/m³/s) and heat-release rate ``[n]`` (W/m³)."""


def parse_outputs(names: list[str] | str | None) -> tuple[str, ...]:
    """The requested optional outputs in canonical order; InputError names an unknown one."""
    if not names:
        return ()
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    wanted = {n.strip() for n in names}
    unknown = sorted(wanted - set(OUTPUTS))
    if unknown:
        raise InputError(f"outputs: unknown output '{unknown[0]}' (known: {', '.join(OUTPUTS)})")
    return tuple(n for n in OUTPUTS if n in wanted)


class ModelHost:
    """One served model: the integrator plus what the API says about it."""

    def __init__(self, name: str, integrator: Integrator):
        self.name = name
        self.integrator = integrator
        self.meta = integrator.meta

    @classmethod
    def load(cls, name: str, path: str | Path, device: str = "auto") -> ModelHost:
        return cls(name, Integrator.load(path, device=device))

    # -- facts -------------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        return self.integrator.species

    @property
    def width(self) -> int:
        return self.integrator.width

    def info(self) -> dict:
        """What a client needs to build states: species order, dt, domain, mechanism hash."""
        m = self.meta
        return {
            "name": self.name, "description": m.description, "species": list(m.species),
            "n_species": m.n_species, "width": self.width, "dt_s": m.dt_s,
            "mechanism_sha256": m.mechanism_sha256, "mechanism_source": m.mechanism_source,
            "phase": m.phase, "temperature_k": list(m.temperature_k), "pressure_pa": list(m.pressure_pa),
            "frozen_temperature_k": m.frozen_temperature_k, "inert_species": list(m.inert_species),
            "outputs": list(OUTPUTS), "device": str(self.integrator.device),
            "near_equilibrium_route_below": m.tail["route_below"] if m.tail else None,
        }

    def check_client(self, mechanism_sha256: str | None = None, species: list[str] | None = None) -> None:
        """409 when the client's mechanism hash or species order is not the model's."""
        if mechanism_sha256 and mechanism_sha256.strip().lower() != self.meta.mechanism_sha256:
            raise MechanismMismatch(
                f"mechanism_sha256: the client's {mechanism_sha256.strip()[:16]}… is not model "
                f"'{self.name}''s {self.meta.mechanism_sha256[:16]}… ({self.meta.mechanism_source})")
        if species is not None and list(species) != self.species:
            first = next((i for i, (a, b) in enumerate(zip(species, self.species)) if a != b),
                         min(len(species), len(self.species)))
            raise MechanismMismatch(
                f"species: the client's order differs from model '{self.name}''s at position {first} "
                f"({len(species)} species sent, {len(self.species)} expected)")

    def substeps(self, dt_s: float | None) -> int:
        """Model steps in ``dt_s``; InputError unless it is a whole multiple of the model's dt."""
        return self.integrator.substeps(dt_s)

    # -- work (device thread only) -----------------------------------------------------------------
    def advance(self, states: np.ndarray, n_sub: int, check: bool = True) -> StepResult:
        """``Integrator.advance`` by ``n_sub`` model steps (``check=False``: states already
        passed ``check_states``)."""
        return self.integrator.advance(states, n_sub * self.meta.dt_s if n_sub > 1 else None,
                                       check=check)

    def outputs(self, states: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Cantera-evaluated outputs at ``states`` ``[n, 2+ns]`` (float64): see :data:`OUTPUTS`."""
        if not names:
            return {}
        gas = self.integrator.gas
        rates = np.empty((len(states), self.meta.n_species)) if "net_production_rates" in names else None
        hrr = np.empty(len(states)) if "heat_release_rate" in names else None
        for i, row in enumerate(states):
            try:
                gas.TPY = float(row[0]), float(row[1]), row[2:]
                if rates is not None:
                    rates[i] = gas.net_production_rates
                if hrr is not None:
                    hrr[i] = gas.heat_release_rate
            except ct.CanteraError as exc:
                raise InputError(f"outputs: Cantera cannot evaluate row {i} ({cantera_message(exc)})")
        out = {}
        if rates is not None:
            out["net_production_rates"] = rates
        if hrr is not None:
            out["heat_release_rate"] = hrr
        return out


def load_hosts(model_dir: str | Path | None, device: str = "auto") -> dict[str, ModelHost]:
    """One :class:`ModelHost` per ``*.safetensors`` file of ``model_dir`` (default: shipped)."""
    entries = list_models(model_dir)
    if not entries:
        where = model_dir or SHIPPED_DIR
        hint = "" if model_dir else " (the shipped default model is missing; pass --model-dir DIR)"
        raise InputError(f"model-dir: no *.safetensors model files in {where}{hint}")
    return {e.name: ModelHost.load(e.name, e.path, device) for e in entries}


# -- dynamic batching --------------------------------------------------------------------------------

@dataclass
class JobResult:
    """The answer to one request. ``states`` has the request's dtype and shape."""

    states: np.ndarray
    n_cells: int
    n_frozen: int
    n_fallback: int
    n_substeps: int
    outputs: dict[str, np.ndarray]
    batch_requests: int  # requests merged into the device call that served this one
    batch_cells: int
    queue_s: float
    device_s: float


@dataclass
class Job:
    states: np.ndarray  # [n, 2+ns] as received (float32 or float64)
    n_sub: int
    outputs: tuple[str, ...]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n_cells(self) -> int:
        return len(self.states)


class BatchObserver:
    """What the batcher reports (the metrics implement it); the default ignores everything."""

    def queue_depth(self, model: str, requests: int, cells: int) -> None: ...

    def rejected(self, model: str) -> None: ...

    def batch(self, model: str, requests: int, cells: int, queue_s: list[float], device_s: float,
              n_frozen: int, n_fallback: int) -> None: ...


class Batcher:
    """Merges queued requests of one model into device calls on ``executor`` (one thread).

    ``queue_delay_s`` > 0 waits that long after the first request of a batch for others to join
    (default 0: take whatever is queued when the device is free). Requests with a different number
    of substeps never share a call. A queued request whose client has gone (its future cancelled)
    is dropped before it reaches the device.
    """

    def __init__(self, host: ModelHost, executor: ThreadPoolExecutor, max_batch_cells: int,
                 max_batch_requests: int, queue_delay_s: float, max_queue_requests: int,
                 max_queue_cells: int, retry_after_s: int, observer: BatchObserver | None = None):
        self.host = host
        self.executor = executor
        self.max_batch_cells = max_batch_cells
        self.max_batch_requests = max_batch_requests
        self.queue_delay_s = queue_delay_s
        self.max_queue_requests = max_queue_requests
        self.max_queue_cells = max_queue_cells
        self.retry_after_s = retry_after_s
        self.observer = observer or BatchObserver()
        self._queue: deque[Job] = deque()
        self._queued_cells = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.host.name}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, then stop."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._drained(), timeout_s)
        except asyncio.TimeoutError:
            log.warning("model %s: %d queued request(s) dropped at shutdown", self.host.name,
                        len(self._queue))
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the service is shutting down"))
        self._queue.clear()

    async def _drained(self) -> None:
        while self._queue or not self._idle.is_set():
            await asyncio.sleep(0.01)

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, cells) waiting for the device."""
        return len(self._queue), self._queued_cells

    def submit(self, states: np.ndarray, n_sub: int, outputs: tuple[str, ...] = ()) -> Job:
        """Queue one request; await ``job.future`` for its :class:`JobResult`.

        Raises :class:`QueueFull` when the queue holds ``max_queue_requests`` requests or the new
        cells would take it past ``max_queue_cells`` (a request alone in the queue is always taken).
        """
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        n = len(states)
        if len(self._queue) >= self.max_queue_requests or (
                self._queue and self._queued_cells + n > self.max_queue_cells):
            self.observer.rejected(self.host.name)
            raise QueueFull(f"queue full: {len(self._queue)} requests, {self._queued_cells} cells "
                            f"waiting for model '{self.host.name}'", self.retry_after_s)
        job = Job(states, n_sub, outputs, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_cells += n
        self.observer.queue_depth(self.host.name, *self.queued)
        self._wake.set()
        return job

    def _take(self) -> list[Job]:
        """The next batch: the oldest live job and the queued jobs that fit with it, in order."""
        batch: list[Job] = []
        cells = 0
        keep: deque[Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # client gone (cancelled) while queued: costs nothing more
                self._queued_cells -= job.n_cells
                continue
            fits = (not batch) or (
                job.n_sub == batch[0].n_sub and len(batch) < self.max_batch_requests
                and cells + job.n_cells <= self.max_batch_cells)
            if fits:
                batch.append(job)
                cells += job.n_cells
                self._queued_cells -= job.n_cells
            else:
                keep.append(job)
                if len(batch) >= self.max_batch_requests or cells >= self.max_batch_cells:
                    break
        keep.extend(self._queue)
        self._queue = keep
        self.observer.queue_depth(self.host.name, *self.queued)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.queue_delay_s > 0 and not self._closing and self._queued_cells < self.max_batch_cells:
                await asyncio.sleep(self.queue_delay_s)
            batch = self._take()
            if not batch:
                continue
            self._idle.clear()
            try:
                started = time.perf_counter()
                outcomes = await loop.run_in_executor(self.executor, self._execute, batch, started)
            except Exception as exc:  # noqa: BLE001 - a failed call fails its requests, not the batcher
                log.exception("model %s: device call failed", self.host.name)
                outcomes = [exc] * len(batch)
            finally:
                self._idle.set()
            for job, outcome in zip(batch, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    # -- device thread --------------------------------------------------------------------------------
    def _execute(self, batch: list[Job], started: float) -> list[JobResult | Exception]:
        host = self.host
        queue_s = [started - job.enqueued for job in batch]
        outcomes: list[JobResult | Exception | None] = [None] * len(batch)
        live = list(range(len(batch)))
        if len(batch) > 1:
            # One bad request must not fail the others: check each before merging.
            for i, job in enumerate(batch):
                try:
                    host.integrator.check_states(_as_tensor(job.states))
                except InputError as exc:
                    outcomes[i] = exc
            live = [i for i in live if outcomes[i] is None]
        if live:
            t0 = time.perf_counter()
            try:
                self._advance_live(batch, live, queue_s, outcomes)
            except (InputError, ValueError) as exc:
                for i in live:
                    outcomes[i] = exc if isinstance(exc, InputError) else InputError(f"states: {exc}")
            device_s = time.perf_counter() - t0
            done = [outcomes[i] for i in live if isinstance(outcomes[i], JobResult)]
            self.observer.batch(host.name, len(done), sum(r.n_cells for r in done),
                                [queue_s[i] for i in live], device_s,
                                sum(r.n_frozen for r in done), sum(r.n_fallback for r in done))
        return outcomes  # type: ignore[return-value]

    def _advance_live(self, batch: list[Job], live: list[int], queue_s: list[float],
                      outcomes: list) -> None:
        host = self.host
        jobs = [batch[i] for i in live]
        t0 = time.perf_counter()
        if len(jobs) == 1:
            merged = jobs[0].states
        else:
            merged = np.concatenate([np.asarray(j.states, dtype=np.float64) for j in jobs])
        # A merged batch holds only requests that each passed check_states in _execute.
        result = host.advance(merged, jobs[0].n_sub, check=len(jobs) == 1)
        device_s = time.perf_counter() - t0
        offset = 0
        batch_cells = len(merged)
        for i, job in zip(live, jobs):
            n = job.n_cells
            rows = slice(offset, offset + n)
            offset += n
            states = result.states[rows]
            if states.dtype != job.states.dtype:
                states = states.astype(job.states.dtype)
            n_frozen = int(np.count_nonzero(result.frozen[rows]))
            n_fallback = int(np.count_nonzero(result.fallback[rows]))
            try:
                extra = host.outputs(np.asarray(states, dtype=np.float64), job.outputs)
            except InputError as exc:
                outcomes[i] = exc
                continue
            extra = {k: v.astype(job.states.dtype, copy=False) for k, v in extra.items()}
            outcomes[i] = JobResult(states, n, n_frozen, n_fallback, result.n_substeps, extra,
                                    len(jobs), batch_cells, queue_s[i], device_s)


def _as_tensor(states: np.ndarray) -> torch.Tensor:
    """States as a float64 tensor for ``check_states`` (a view when already float64)."""
    return torch.from_numpy(np.ascontiguousarray(states, dtype=np.float64))


def make_executor(threads: int | None = None) -> ThreadPoolExecutor:
    """The single thread every device call runs on (one device, calls never overlap).

    ``threads``: torch CPU threads of that thread. OpenMP keeps the thread count per thread, so
    ``torch.set_num_threads`` in the main thread does not reach this one; it is set here.
    """
    def init() -> None:
        if threads:
            torch.set_num_threads(threads)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepkin-device", initializer=init)

