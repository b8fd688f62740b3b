"""``deepkin serve`` for one round's model, started and stopped by the loop.

The OpenFOAM chemistry model of a round's flames talks to this server: 127.0.0.1, a free port, a
bearer token made for the run (the solver gets it as ``DEEPKIN_TOKEN``). On Linux the server is
told to stop when the loop's process dies, so a killed run leaves no server behind.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from service.live_server import LiveServer

STARTUP_TIMEOUT_S = 180.0


class ModelServer(LiveServer):
    """``deepkin serve --model-dir MODEL_DIR`` on 127.0.0.1 with a token made for the run
    (:class:`service.live_server.LiveServer`, stopped with this process); a context manager.
    ``url`` and ``token`` are what a case's ``deepkinCoeffs`` and the solver's environment need;
    a failed start is a ``ServerStartError`` (a DeepkinError) quoting the log's last line."""

    def __init__(self, model_dir: Path, log_path: Path, threads: int | None = None):
        self.token = secrets.token_urlsafe(24)
        threads_args = ["--threads", str(threads)] if threads else []
        super().__init__(model_dir, "--token", self.token, *threads_args, log_path=log_path,
                         startup_timeout_s=STARTUP_TIMEOUT_S, die_with_parent=True)
        self.threads = threads

    def log_tail(self) -> str:
        lines = self.log().strip().splitlines()
        return lines[-1] if lines else "no output"

    @property
    def env(self) -> dict[str, str]:
        """What an OpenFOAM run needs in its environment to call this server."""
        return {"DEEPKIN_TOKEN": self.token}
