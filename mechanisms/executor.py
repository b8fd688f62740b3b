"""The one executor interface for parallel Cantera work, backed by Dask distributed.

``make_executor(workers=k)`` starts a ``LocalCluster`` of ``k`` single-threaded worker processes;
``make_executor(scheduler="tcp://host:8786")`` connects to an existing cluster instead;
``workers=0`` runs tasks inline in this process (debugging, baselines). Tasks are plain functions
of picklable arguments; a large argument shared by every task (the mechanism) is sent once with
:meth:`Executor.share`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mechanisms.errors import DeepkinError


class Executor:
    """Runs ``fn(*args)`` for many argument tuples and yields results as they finish."""

    n_workers: int = 1
    description: str = ""

    def share(self, obj: Any) -> Any:
        """A handle to ``obj`` that can be passed as a task argument (sent once per worker)."""
        return obj

    def map_unordered(self, fn: Callable[..., Any],
                      jobs: Iterable[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, fn(*args))`` for each ``(key, args)`` in ``jobs``, in completion order.

        An exception raised by a task propagates here; deterministic failures should be returned
        as results with a status instead.
        """
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineExecutor(Executor):
    """Runs every task in this process, one after the other."""

    description = "inline (this process)"

    def map_unordered(self, fn, jobs):
        for key, args in jobs:
            yield key, fn(*args)


class DaskExecutor(Executor):
    """Runs tasks on a Dask distributed cluster, keeping a bounded number in flight."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 connect_timeout_s: float = 10.0):
        from distributed import Client, LocalCluster

        for name in ("distributed", "distributed.worker", "distributed.scheduler",
                     "distributed.nanny", "distributed.core", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._cluster = None
        if scheduler:
            check_scheduler_address(scheduler)
            try:
                self._client = Client(scheduler, timeout=connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                raise DeepkinError(f"scheduler: cannot reach the Dask scheduler at {scheduler} "
                                   f"({type(exc).__name__})")
            self._client.wait_for_workers(1, timeout=connect_timeout_s * 6)
            self.n_workers = max(1, sum(self._client.nthreads().values()))
            self.description = f"Dask scheduler {scheduler} ({self.n_workers} worker threads)"
        else:
            n = workers if workers and workers > 0 else 1
            with warnings.catch_warnings():
                # Another cluster on this machine holds port 8787; ours then picks a free port.
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
            self.n_workers = n
            self.description = f"Dask LocalCluster ({n} worker process{'es' if n > 1 else ''})"

    def share(self, obj):
        return self._client.scatter(obj, broadcast=True, hash=False)

    def map_unordered(self, fn, jobs):
        from distributed import as_completed

        window = max(2, 2 * self.n_workers)
        job_iter = iter(jobs)
        keys: dict[Any, Any] = {}
        pending = as_completed()

        def submit_next() -> bool:
            try:
                key, args = next(job_iter)
            except StopIteration:
                return False
            future = self._client.submit(fn, *args, pure=False)
            keys[future] = key
            pending.add(future)
            return True

        for _ in range(window):
            if not submit_next():
                break
        try:
            for future in pending:
                result = future.result()
                key = keys.pop(future)
                future.release()
                submit_next()
                yield key, result
        finally:
            for future in list(keys):
                future.cancel()

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


def check_scheduler_address(address: str) -> None:
    """DeepkinError unless ``address`` reads as a Dask scheduler address (``tcp://HOST:PORT``,
    the scheme optional); checked before a run touches any file."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise DeepkinError(f"scheduler: '{address}' is not a scheduler address ({exc}); write "
                           "tcp://HOST:PORT")


def make_executor(workers: int | None = None, scheduler: str | None = None) -> Executor:
    """An :class:`InlineExecutor` for ``workers == 0``, else a :class:`DaskExecutor`."""
    if scheduler:
        return DaskExecutor(scheduler=scheduler)
    if workers == 0:
        return InlineExecutor()
    return DaskExecutor(workers=workers)
