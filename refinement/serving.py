"""``deepkin serve`` for one round's model, started and stopped by the loop.

The OpenFOAM chemistry model of a round's flames talks to this server: 127.0.0.1, a free port, a
bearer token made for the run (the solver gets it as ``DEEPKIN_TOKEN``). On Linux the server is
told to stop when the loop's process dies, so a killed run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mechanisms.errors import DeepkinError

STARTUP_TIMEOUT_S = 180.0
PR_SET_PDEATHSIG = 1  # prctl(2)


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


class ModelServer:
    """``deepkin serve --model-dir MODEL_DIR`` on 127.0.0.1; a context manager. ``url`` and
    ``token`` are what a case's ``deepkinCoeffs`` and the solver's environment need."""

    def __init__(self, model_dir: Path, log_path: Path, threads: int | None = None):
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.threads = threads
        self.token = secrets.token_urlsafe(24)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ModelServer:
        """Start the server and wait until it answers ``/v2/health/ready``; DeepkinError with the
        end of its log when it exits or is not ready within :data:`STARTUP_TIMEOUT_S`."""
        import httpx

        self.port = free_port()
        command = [sys.executable, "-m", "deepkin", "serve", "--model-dir", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                   "--token", self.token]
        if self.threads:
            command += ["--threads", str(self.threads)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent if sys.platform == "linux"
                                        else None)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise DeepkinError(f"serve: deepkin serve exited with {self.process.returncode}: "
                                   f"{self._tail()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise DeepkinError(f"serve: deepkin serve was not ready after {STARTUP_TIMEOUT_S:g} s: "
                           f"{self._tail()}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout_s`` s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.process = None

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    @property
    def env(self) -> dict[str, str]:
        """What an OpenFOAM run needs in its environment to call this server."""
        return {"DEEPKIN_TOKEN": self.token}

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

