"""Run the service under uvicorn: one process, one device thread, read deadlines on every
connection, and a shutdown on SIGTERM/SIGINT that ends within ``graceful_shutdown_s``."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import socket

import uvicorn

from kinetics.step.device import set_threads
from mechanisms.errors import DeepkinError, InputError
from service.app import create_app
from service.deps import ServiceState
from service.hosting import load_hosts
from service.protocol import deadline_protocol
from service.settings import ServiceSettings

log = logging.getLogger("deepkin.service")

# glibc mallopt parameters (malloc.h). Large request buffers and tensors are freed and reallocated
# on every request; by default glibc returns them to the kernel each time (mmap/munmap, page faults
# on the next request). Keeping them roughly doubles the binary transport rate, and one arena keeps
# the device thread on the main heap: in a thread arena (64 MiB heaps) a GRI step at 65,536 cells
# spent +30-70 % CPU in page faults (see docs/service.md).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 8 << 30, M_TOP_PAD: 512 << 20,
                   M_ARENA_MAX: 1}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 30),
              "MALLOC_TOP_PAD_": str(512 << 20), "MALLOC_ARENA_MAX": "1"}


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_SETTINGS` through glibc's ``mallopt`` (what the :data:`MALLOC_ENV`
    variables do at start-up). Call it before any thread starts. Returns False where there is no
    glibc (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD takes an int: 8 GiB does not fit, the largest int does the same job.
    ok = True
    for param, value in MALLOC_SETTINGS.items():
        ok &= mallopt(param, min(value, 2**31 - 1)) == 1
    return ok


# The shutdown's schedule, counted back from graceful_shutdown_s after it starts (s): requests
# still unanswered get 503 ANSWER_MARGIN_S before the end; uvicorn stops waiting for connections
# UVICORN_MARGIN_S before it; the lifespan's end (service.app.LAST_DRAIN_S) takes what is left.
ANSWER_MARGIN_S = 1.0
UVICORN_MARGIN_S = 0.5


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the service when its shutdown begins (``ServiceState.drain``)
    so that device calls stop and every request is answered before the drain time is over."""

    def __init__(self, config: uvicorn.Config, state: ServiceState):
        super().__init__(config)
        self.service_state = state

    async def shutdown(self, sockets=None) -> None:
        self.service_state.drain(self.service_state.settings.graceful_shutdown_s - ANSWER_MARGIN_S)
        await super().shutdown(sockets)


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: any free port), not yet listening, as uvicorn
    binds one. A host that does not resolve is an :class:`InputError`, an address that cannot be
    bound (in use, not this machine's, a privileged port) a :class:`DeepkinError`: one line each."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise InputError(f"host: cannot listen on '{host[:80]}': {reason}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: " (another process listens there; choose another --port)",
                errno.EACCES: " (a port below 1024 needs privileges)",
                errno.EADDRNOTAVAIL: " (not an address of this machine)"}.get(exc.errno, "")
        raise DeepkinError(f"port: cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: ServiceSettings) -> None:
    """Load the models of ``settings``, bind the socket, then serve them until SIGTERM/SIGINT.

    Loading happens before the socket opens, so a bad model directory fails at once with one line,
    as does an address that cannot be bound (:func:`bound_socket`: in use, a host that does not
    resolve), and ``/v2/health/ready`` is true from the first connection on. On shutdown the
    socket closes, requests in flight are answered (those still unanswered 1 s before
    ``graceful_shutdown_s`` get 503, a device call still running is stopped at its next model
    step) and the process exits within ``graceful_shutdown_s`` of the signal (uvicorn re-raises
    SIGTERM, which ends the process even with the device thread still in a call).
    """
    tune_malloc()
    if settings.threads:
        # On a CPU shared with other work, fewer intra-op threads than cores avoids threads
        # waiting for each other (measured: 1 thread 10-70x faster than 2 on 2 busy cores).
        set_threads(settings.threads)
    hosts = load_hosts(settings.model_dir, settings.device, settings.precision)
    sock = bound_socket(settings.host, settings.port)
    app = create_app(settings, hosts)
    state = app.state.service
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=settings.graceful_shutdown_s - UVICORN_MARGIN_S,
                            access_log=False, timeout_keep_alive=settings.keep_alive_s, lifespan="on",
                            ws="none",  # no WebSocket routes: an upgrade stays plain HTTP
                            http=deadline_protocol(settings.header_timeout_s, settings.body_timeout_s,
                                                   settings.graceful_shutdown_s - ANSWER_MARGIN_S,
                                                   settings.max_header_bytes, state.metrics.refused))
    server = DrainingServer(config, state)
    names = ", ".join(f"{name} ({h.meta.n_species} species, dt {h.meta.dt_s:g} s, {h.integrator.device})"
                      for name, h in hosts.items())
    address, port = sock.getsockname()[:2]
    logging.getLogger("uvicorn.error").info("deepkin serving %s on http://%s:%d", names,
                                            f"[{address}]" if ":" in address else address, port)
    server.run(sockets=[sock])
