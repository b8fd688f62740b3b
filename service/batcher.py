"""The dynamic batcher: requests of one model queued together share one device call.

A :class:`Batcher` per model merges the requests that are queued when the device is free into one
``Integrator.advance`` call on the single device thread (:class:`~service.device.Device`), bounded
by a cell cap and a request cap; its queue is bounded too (:class:`~service.errors.QueueFull` →
503), and so is the work of one request (``max_substeps``, ``max_cell_substeps``: 422 beyond) and
the device time of one call (``step_timeout_s``: a merged call that runs past it is retried one
request at a time, a request alone that does gets a 422).

A request served alone goes to ``Integrator.advance`` as received, so it is advanced exactly as a
direct call on the same array (bit for bit). Merged requests are each checked first (one bad
request must not fail the others), in float64, then concatenated once and advanced unchecked; each
answer is cast back to its request's dtype once. A merged request can differ from a solo call in
the last bit (the network's and NASA-7's kernels and the Newton iteration count depend on the
batch; measured ≤ 1 ulp-scale, ~1e-13 K).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from kinetics.integrator import StepInterrupted
from mechanisms.errors import InputError
from service.device import Device
from service.errors import QueueFull, ShuttingDown
from service.hosting import ModelHost
from service.settings import ServiceSettings

log = logging.getLogger("deepkin.service")


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
    n_substeps: int
    outputs: tuple[str, ...]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    alone: bool = False  # a merged call it was in ran past the budget: served alone from now on

    @property
    def n_cells(self) -> int:
        return len(self.states)


class RunAlone(Exception):
    """The outcome of a job whose merged call ran past its budget: queue it again, alone."""


class BatchObserver:
    """What the batcher reports (the metrics implement it); the default ignores everything."""

    def queue_depth(self, model: str, requests: int, cells: int) -> None: ...

    def rejected(self, model: str) -> None: ...

    def batch(self, model: str, requests: int, cells: int, queue_s: list[float], device_s: float,
              n_frozen: int, n_fallback: int) -> None: ...


class Batcher:
    """Merges queued requests of one model into device calls on ``device``.

    ``settings`` gives the caps: cells and requests of one call (``max_batch_cells``,
    ``max_batch_requests``), the queue (``max_queue_requests``, ``max_queue_cells``,
    ``retry_after_s``), the work of one request (``max_substeps``, ``max_cell_substeps``) and
    ``queue_delay_s``: > 0 waits that long after the first request of a batch for others to join
    (default 0: take whatever is queued when the device is free). Requests with a different number
    of substeps never share a call. A queued request whose client has gone (its future cancelled)
    is dropped before it reaches the device.
    """

    def __init__(self, host: ModelHost, device: Device, settings: ServiceSettings,
                 observer: BatchObserver | None = None):
        self.host = host
        self.device = device
        self.settings = settings
        self.observer = observer or BatchObserver()
        self._queue: deque[Job] = deque()
        self._queued_cells = 0
        self._running: list[Job] = []
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
        self.abandon(ShuttingDown("the service is shutting down"))

    def abandon(self, error: Exception) -> None:
        """Refuse new requests and answer every unanswered one, queued or on the device, with
        ``error`` (the drain deadline has come; a device call still running is left to end)."""
        self._closing = True
        for job in [*self._queue, *self._running]:
            if not job.future.done():
                job.future.set_exception(error)
        self._queue.clear()
        self._queued_cells = 0

    async def _drained(self) -> None:
        while self._queue or not self._idle.is_set():
            await asyncio.sleep(0.01)

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, cells) waiting for the device."""
        return len(self._queue), self._queued_cells

    def submit(self, states: np.ndarray, n_substeps: int, outputs: tuple[str, ...] = ()) -> Job:
        """Queue one request; await ``job.future`` for its :class:`JobResult`.

        Raises InputError when ``n_substeps`` is over ``max_substeps`` or cells × substeps over
        ``max_cell_substeps``, and :class:`QueueFull` when the queue holds ``max_queue_requests``
        requests or the new cells would take it past ``max_queue_cells`` (a request alone in the
        queue is always taken).
        """
        s = self.settings
        n = len(states)
        if n_substeps > s.max_substeps:
            raise InputError(f"dt: {n_substeps:.4g} model steps of {self.host.meta.dt_s:g} s is over "
                             f"the limit of {s.max_substeps} per request (max_substeps)")
        if n * n_substeps > s.max_cell_substeps:
            raise InputError(f"states: {n} cells × {n_substeps} model steps is over the limit of "
                             f"{s.max_cell_substeps} cell-steps per request (max_cell_substeps); send "
                             f"fewer cells or a smaller dt")
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if len(self._queue) >= s.max_queue_requests or (
                self._queue and self._queued_cells + n > s.max_queue_cells):
            self.observer.rejected(self.host.name)
            raise QueueFull(f"queue full: {len(self._queue)} requests, {self._queued_cells} cells "
                            f"waiting for model '{self.host.name}'", s.retry_after_s)
        job = Job(states, n_substeps, outputs, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_cells += n
        self.observer.queue_depth(self.host.name, *self.queued)
        self._wake.set()
        return job

    def _take(self) -> list[Job]:
        """The next batch: the oldest live job and the queued jobs that fit with it, in order."""
        max_cells, max_requests = self.settings.max_batch_cells, self.settings.max_batch_requests
        batch: list[Job] = []
        cells = 0
        keep: deque[Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # client gone (cancelled) while queued: costs nothing more
                self._queued_cells -= job.n_cells
                continue
            fits = (not batch) or (
                not job.alone and not batch[0].alone
                and job.n_substeps == batch[0].n_substeps and len(batch) < max_requests
                and cells + job.n_cells <= max_cells)
            if fits:
                batch.append(job)
                cells += job.n_cells
                self._queued_cells -= job.n_cells
            else:
                keep.append(job)
                if batch[0].alone or len(batch) >= max_requests or cells >= max_cells:
                    break
        keep.extend(self._queue)
        self._queue = keep
        self.observer.queue_depth(self.host.name, *self.queued)
        return batch

    async def _run(self) -> None:
        delay_s = self.settings.queue_delay_s
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if delay_s > 0 and not self._closing and self._queued_cells < self.settings.max_batch_cells:
                await asyncio.sleep(delay_s)
            batch = self._take()
            if not batch:
                continue
            self._idle.clear()
            self._running = batch
            try:
                started = time.perf_counter()
                outcomes = await self.device.run(partial(self._execute, batch, started))
            except Exception as exc:  # noqa: BLE001 - a failed call fails its requests, not the batcher
                log.exception("model %s: device call failed", self.host.name)
                outcomes = [exc] * len(batch)
            finally:
                self._running = []
                self._idle.set()
            self._answer(batch, outcomes)

    def _answer(self, batch: list[Job], outcomes: list) -> None:
        """Settle each job's future with its outcome; jobs to run alone go back to the front of
        the queue, in their order."""
        again = [job for job, outcome in zip(batch, outcomes)
                 if isinstance(outcome, RunAlone) and not job.future.done()]
        for job in reversed(again):
            job.alone = True
            self._queue.appendleft(job)
            self._queued_cells += job.n_cells
        if again:
            self.observer.queue_depth(self.host.name, *self.queued)
        for job, outcome in zip(batch, outcomes):
            if job.future.done() or isinstance(outcome, RunAlone):
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    # -- device thread --------------------------------------------------------------------------------
    def _execute(self, batch: list[Job], started: float, stop: Callable[[], bool]
                 ) -> list[JobResult | Exception]:
        """One device call for ``batch``: an outcome per job, in order (its result, its error,
        or :class:`RunAlone`); ``stop`` is the device's deadline (see :class:`Device`)."""
        outcomes: list[JobResult | Exception | None] = [None] * len(batch)
        if len(batch) == 1:
            # Served alone: Integrator.advance checks and converts it, exactly as a direct call.
            inputs, check = [batch[0].states], True
        else:
            inputs, check = self._checked_float64(batch, outcomes), False
        live = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if not live:
            return outcomes  # type: ignore[return-value]
        jobs = [batch[i] for i in live]
        queue_s = [started - job.enqueued for job in jobs]
        t0 = time.perf_counter()
        try:
            answers = self._advance(jobs, inputs, check, queue_s, t0, stop)
        except StepInterrupted as exc:
            answers = [self._interrupted(exc, jobs)] * len(jobs)
        except (InputError, ValueError) as exc:
            answers = [exc if isinstance(exc, InputError) else InputError(f"states: {exc}")] * len(jobs)
        device_s = time.perf_counter() - t0
        for i, answer in zip(live, answers):
            outcomes[i] = answer
        done = [a for a in answers if isinstance(a, JobResult)]
        self.observer.batch(self.host.name, len(done), sum(r.n_cells for r in done), queue_s, device_s,
                            sum(r.n_frozen for r in done), sum(r.n_fallback for r in done))
        return outcomes  # type: ignore[return-value]

    def _checked_float64(self, batch: list[Job], outcomes: list) -> list[np.ndarray]:
        """The states of each job that passes ``check_states``, as float64 (a view when they
        already are); a job that fails gets its InputError in ``outcomes``, the others go on."""
        checked = []
        for i, job in enumerate(batch):
            states = np.ascontiguousarray(job.states, dtype=np.float64)
            try:
                self.host.integrator.check_states(states)
            except InputError as exc:
                outcomes[i] = exc
                continue
            checked.append(states)
        return checked

    def _interrupted(self, exc: StepInterrupted, jobs: list[Job]) -> Exception:
        """The outcome of each job of a call stopped at the device's deadline."""
        if self.device.draining:
            return ShuttingDown("the service is shutting down: the step was stopped unfinished")
        if len(jobs) > 1:
            return RunAlone()
        job = jobs[0]
        return InputError(f"states: {job.n_cells} cells × {job.n_substeps} model steps need more than "
                          f"the device-time budget of {self.device.step_timeout_s:g} s per call "
                          f"(step_timeout_s; stopped after {exc.substeps_done} steps); send fewer "
                          f"cells or a smaller dt")

    def _advance(self, jobs: list[Job], inputs: list[np.ndarray], check: bool, queue_s: list[float],
                 t0: float, stop: Callable[[], bool]) -> list[JobResult | InputError]:
        """Advance ``inputs`` (the states of ``jobs``) in one call; an answer per job."""
        merged = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        result = self.host.integrator.advance(merged, jobs[0].n_substeps, check=check, stop=stop)
        device_s = time.perf_counter() - t0
        answers: list[JobResult | InputError] = []
        offset = 0
        for job, waited_s in zip(jobs, queue_s):
            rows = slice(offset, offset + job.n_cells)
            offset += job.n_cells
            states = result.states[rows]
            if states.dtype != job.states.dtype:
                states = states.astype(job.states.dtype)
            try:
                extra = self.host.outputs(states, job.outputs)
            except InputError as exc:
                answers.append(exc)
                continue
            extra = {k: v.astype(job.states.dtype, copy=False) for k, v in extra.items()}
            answers.append(JobResult(states, job.n_cells, int(np.count_nonzero(result.frozen[rows])),
                                     int(np.count_nonzero(result.fallback[rows])), result.n_substeps,
                                     extra, len(jobs), len(merged), waited_s, device_s))
        return answers
