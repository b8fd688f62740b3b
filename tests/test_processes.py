"""Worker processes that do not outlive the run that started them (mechanisms/processes.py)."""

import subprocess
import sys

import pytest

from tests.helpers.processes import ROOT, gone, kill_parent_and_wait, start_parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pool_worker_dies_with_the_run_that_started_it(tmp_path):
    """A killed ``deepkin refine`` leaves no 0D rollout or ODE reference worker computing on: the
    loop's process pools start their workers with ``die_with_parent``."""
    pid_file = tmp_path / "worker.pid"
    parent, worker = start_parent(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from mechanisms.processes import die_with_parent\n"
        "pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=die_with_parent)\n"
        "pid = pool.submit(os.getpid).result()\n"
        "pool.submit(time.sleep, 120)\n"
        f"open({str(pid_file)!r}, 'w').write(str(pid))\n"
        "time.sleep(120)\n", pid_file)
    assert not gone(worker)
    if not kill_parent_and_wait(parent, worker):
        pytest.fail("the pool worker outlived its parent by 10 s")


def test_die_with_parent_is_harmless_in_a_process_that_outlives_nothing():
    """Called in a process whose parent lives on, it changes nothing visible: the process runs."""
    run = subprocess.run([sys.executable, "-c", "from mechanisms.processes import die_with_parent;"
                          "die_with_parent(); print('ran')"], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ran"
