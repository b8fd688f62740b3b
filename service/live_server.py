"""``deepkin serve`` in a subprocess on 127.0.0.1: :class:`LiveServer` and :func:`free_port`.

:class:`LiveServer` runs the real command (``python -m deepkin serve``) on a free port of
127.0.0.1 and waits until ``/v2/health/ready`` answers, so whatever uses it talks HTTP to the same
server users run: the tests, the service benchmarks (``benchmarks/service_*.py``,
``header_flood.py``, the OpenFOAM ones) and a refinement round
(``refinement.serving.ModelServer``). Needs the standard library and httpx only (no torch).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mechanisms.errors import DeepkinError

PR_SET_PDEATHSIG = 1  # prctl(2)


class ServerStartError(DeepkinError):
    """``deepkin serve`` exited, or did not answer ready in time; the message quotes its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class LiveServer:
    """``deepkin serve --model-dir DIR ARGS`` on 127.0.0.1; a context manager.

    ``env``: added to this process's environment for the server; ``log_path``: where its output
    goes (default: a temporary file); ``startup_timeout_s``: how long :meth:`start` waits for it
    to be ready (s); ``nice``: its CPU priority; ``die_with_parent``: on Linux, the server is told
    to stop when this process dies, so a killed caller leaves no server behind. :meth:`stop`
    sends SIGTERM (graceful shutdown) and returns the exit code.
    """

    def __init__(self, model_dir: str | Path, *args: str, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None, startup_timeout_s: float = 120.0,
                 nice: int = 0, die_with_parent: bool = False):
        self.model_dir = Path(model_dir)
        self.args = list(args)
        self._env = {**os.environ, **(env or {})}
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="deepkin-serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.nice = nice
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        """Start the server and wait until it answers ``/v2/health/ready``; ServerStartError
        with the end of its log when it exits or is not ready within ``startup_timeout_s``."""
        self.port = free_port()
        command = [sys.executable, "-m", "deepkin", "serve", "--model-dir", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *self.args]
        if self.nice:
            command = ["nice", "-n", str(self.nice), *command]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self._env,
                                        preexec_fn=_die_with_parent if self.die_with_parent else None)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise ServerStartError(f"serve: deepkin serve exited with {code}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"serve: deepkin serve was not ready after {self.startup_timeout_s:g} s: "
                               f"{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout_s``); the exit code (None
        when it was not started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        """The end of the server's output (its last 4000 characters)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def log_tail(self) -> str:
        """What a start failure quotes of the log: its end (:meth:`log`) on a line of its own."""
        return "\n" + self.log()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
