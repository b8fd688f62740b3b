"""A live server in a subprocess: ``LiveServer`` and ``free_port``.

``LiveServer`` runs the real command (``python -m deepkin serve``) on 127.0.0.1 and waits until
``/v2/health/ready`` answers, so whatever uses it talks HTTP to the same server users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from refinement.serving import free_port  # re-exported: the tests' one free_port

SHARED_TOKEN = "example-token"  # the bearer token of the tests' shared h2 server (conftest.h2_server)


class LiveServer:
    """``deepkin serve --model-dir DIR ARGS`` on 127.0.0.1; a context manager.

    ``stop()`` sends SIGTERM (graceful shutdown) and returns the exit code; the server's output is
    kept in ``log_path``.
    """

    def __init__(self, model_dir: str | Path, *args: str, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None, startup_timeout_s: float = 120.0,
                 nice: int = 0):
        self.model_dir = Path(model_dir)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="deepkin-serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.nice = nice
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.port = free_port()
        command = [sys.executable, "-m", "deepkin", "serve", "--model-dir", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *self.args]
        if self.nice:
            command = ["nice", "-n", str(self.nice), *command]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {self.startup_timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout_s``); the exit code."""
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
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

