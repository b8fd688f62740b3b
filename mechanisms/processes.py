"""Child processes that do not outlive the process that started them.

:func:`die_with_parent` is for ``subprocess``'s ``preexec_fn`` and for a process pool's
``initializer``: a ``deepkin refine`` (or ``deepkin openfoam run``) that is killed leaves no
OpenFOAM solver writing on into a case, and no 0D rollout or ODE reference worker computing on,
that the next run resumes. :func:`each_in_processes` runs calls side by side in such workers and
hands back each result as its call ends.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> None:
    """On Linux, the calling (child) process gets SIGTERM when the thread that started it dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or without a C library to ask, nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def each_in_processes(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], workers: int
                      ) -> Iterator[tuple[int, T]]:
    """``(i, fn(*calls[i]))`` for every call, as each one ends: in this process, one after the
    other, when ``workers`` <= 1 or there is one call; else in up to ``workers`` spawned
    processes (spawn: the parent may hold torch's thread pools, which a forked child can
    deadlock on) that die with this one, each result as soon as its call ends, so that a
    caller's progress moves with the work. A call's exception is raised when its turn comes;
    the calls not started by then are cancelled and the ones running are waited for. ``fn`` and
    the arguments must pickle (``fn`` a module-level function)."""
    if workers <= 1 or len(calls) <= 1:
        for i, args in enumerate(calls):
            yield i, fn(*args)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(min(workers, len(calls)), mp_context=get_context("spawn"),
                               initializer=die_with_parent)
    try:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["die_with_parent", "each_in_processes"]
