"""Where the step runs: the torch device a name stands for, and the CPU threads of a thread.

:func:`resolve_device` is the one reading of a ``device`` option (``auto``, ``cpu``, ``cuda``,
``cuda:N``) for the integrator, the exported step and training; :func:`set_threads` sets the
intra-op CPU threads of the calling thread (OpenMP keeps the count per thread), so that a caller
outside ``kinetics`` (the service's device thread) needs no torch of its own.
"""

from __future__ import annotations

import torch

from mechanisms.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device`` (``None`` or ``"auto"``: the GPU when there is one);
    InputError for an unknown name or a CUDA device on a machine without one."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"device: unknown device '{device}' (use cpu, cuda, cuda:N or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: '{device}' requested but no CUDA GPU is available")
    return dev


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op CPU threads for the torch work of the calling thread."""
    torch.set_num_threads(threads)
