"""Worker processes that do not outlive the run that started them (mechanisms/processes.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie not yet reaped by init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pool_worker_dies_with_the_run_that_started_it(tmp_path):
    """A killed ``deepkin refine`` leaves no 0D rollout or ODE reference worker computing on: the
    loop's process pools start their workers with ``die_with_parent``."""
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from mechanisms.processes import die_with_parent\n"
        "pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=die_with_parent)\n"
        "pid = pool.submit(os.getpid).result()\n"
        "pool.submit(time.sleep, 120)\n"
        f"open({str(pid_file)!r}, 'w').write(str(pid))\n"
        "time.sleep(120)\n")], cwd=str(ROOT))
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    assert not _gone(worker)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _gone(worker):
            return
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the pool worker outlived its parent by 10 s")


def test_die_with_parent_is_harmless_in_a_process_that_outlives_nothing():
    """Called in a process whose parent lives on, it changes nothing visible: the process runs."""
    run = subprocess.run([sys.executable, "-c", "from mechanisms.processes import die_with_parent;"
                          "die_with_parent(); print('ran')"], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ran"
