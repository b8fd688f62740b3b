"""A parent process killed under its child, for the tests of ``mechanisms.processes.die_with_parent``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_parent(script: str, pid_file: Path, wait_s: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Run ``script`` (Python, from the repository root) as a parent that starts a child and
    writes the child's pid to ``pid_file``; ``(parent, child pid)`` once it has."""
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT))
    deadline = time.monotonic() + wait_s
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return parent, int(pid_file.read_text())


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie not yet reaped by init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def kill_parent_and_wait(parent: subprocess.Popen, child: int, within_s: float = 10.0) -> bool:
    """SIGKILL ``parent``, then True once ``child`` is gone within ``within_s`` s; False (and
    the child killed, so that no test leaves it behind) when it outlives its parent."""
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if gone(child):
            return True
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    return False
