"""Child processes that do not outlive the process that started them.

:func:`die_with_parent` is for ``subprocess``'s ``preexec_fn`` and for a process pool's
``initializer``: a ``deepkin refine`` (or ``deepkin openfoam run``) that is killed leaves no
OpenFOAM solver writing on into a case, and no 0D rollout or ODE reference worker computing on,
that the next run resumes.
"""

from __future__ import annotations

import ctypes
import signal
import sys

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


__all__ = ["die_with_parent"]
