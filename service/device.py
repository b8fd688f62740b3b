"""The device: the one thread every device call runs on, and the clock of those calls.

Each call has a budget of ``step_timeout_s`` of device time. The integrator asks before every
model step and every Cantera fallback cell whether to stop (``Integrator.advance(stop=...)``), so
a call ends within its budget plus one model step; from the start of a shutdown
(:meth:`Device.drain`) calls also stop at the drain deadline. :attr:`Device.busy_s` is how long
the running call has taken so far: past the budget the device counts as wedged (``wedged``), which
``/v2/health/ready`` reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from kinetics.step.device import set_threads

Result = TypeVar("Result")


class Device:
    """One thread for every device call (one device: calls never overlap) and their deadlines.

    ``threads``: torch CPU threads of that thread. OpenMP keeps the thread count per thread, so
    setting them in the main thread does not reach this one; they are set here.
    ``step_timeout_s``: the device-time budget of one call (s).
    """

    def __init__(self, threads: int | None, step_timeout_s: float):
        def init() -> None:
            if threads:
                set_threads(threads)

        self.step_timeout_s = step_timeout_s
        self.drain_at: float | None = None  # time.monotonic() at which every call stops
        self._call_started: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepkin-device",
                                            initializer=init)

    async def run(self, call: Callable[[Callable[[], bool]], Result]) -> Result:
        """``call(stop)`` on the device thread; ``stop()`` turns True once the call has used its
        budget or the drain deadline has passed."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, call)

    def _timed(self, call: Callable[[Callable[[], bool]], Result]) -> Result:
        started = time.monotonic()
        budget_end = started + self.step_timeout_s

        def stop() -> bool:
            now = time.monotonic()
            return now > budget_end or (self.drain_at is not None and now > self.drain_at)

        self._call_started = started
        try:
            return call(stop)
        finally:
            self._call_started = None

    @property
    def busy_s(self) -> float:
        """Seconds the running call has taken so far (0 when the device is idle)."""
        started = self._call_started
        return 0.0 if started is None else time.monotonic() - started

    @property
    def wedged(self) -> bool:
        """A call has run past its budget (it stops at its next model step, unless stuck)."""
        return self.busy_s > self.step_timeout_s

    @property
    def draining(self) -> bool:
        return self.drain_at is not None

    def drain(self, deadline: float) -> None:
        """Stop every call at ``deadline`` (``time.monotonic()``) from now on."""
        self.drain_at = deadline

    def close(self) -> None:
        """Let the thread go without waiting: a call still running (one that does not reach a
        stop check) must not hold up the exit."""
        self._executor.shutdown(wait=False, cancel_futures=True)
