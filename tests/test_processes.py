"""Worker processes that do not outlive the run that started them (mechanisms/processes.py)."""

import subprocess
import sys
import time

import pytest

from mechanisms.processes import each_in_processes
from tests.helpers.processes import ROOT, gone, kill_parent_and_wait, start_parent


def _nap(seconds: float, value: int) -> int:
    """A call of a given length (module level: spawned workers import it)."""
    time.sleep(seconds)
    if value < 0:
        raise ValueError(f"call {value} failed")
    return value


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


def test_each_in_processes_hands_back_each_result_as_its_call_ends():
    """Two workers, a long call and two short ones: the short ones come back while the long one
    still runs (an ODE reference computed is logged when it is, not when the last one is), each
    with its index; in this process, one after the other, with one worker."""
    calls = [(4.0, 10), (0.1, 11), (0.1, 12)]
    started = time.monotonic()
    seen = [(i, value, time.monotonic() - started)
            for i, value in each_in_processes(_nap, calls, workers=2)]
    assert [i for i, _, _ in seen] == [1, 2, 0]
    assert [value for _, value, _ in seen] == [11, 12, 10]
    assert seen[1][2] < seen[2][2] - 2.0  # reported seconds before the long call ended
    assert list(each_in_processes(_nap, [(0.0, 1), (0.0, 2)], workers=1)) == [(0, 1), (1, 2)]


def test_each_in_processes_raises_a_calls_failure():
    with pytest.raises(ValueError, match="call -1 failed"):
        for _ in each_in_processes(_nap, [(0.1, 3), (0.2, -1), (0.1, 4)], workers=2):
            pass
