"""A stopped run of OpenFOAM's ODE chemistry goes on from its last complete written time
(``premixed_run(..., resume=True)``, what ``deepkin refine`` does for its ODE references: a
GRI-3.0 reference costs 20-65 min, and a session may end in the middle of one)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from couplers.openfoam.cases import CASE_INFO, spec_from_options
from couplers.openfoam.flame_runs import premixed_run, prepare_case
from couplers.openfoam.foam import read_internal_field, time_directories
from mechanisms.errors import InputError
from tests.helpers.openfoam import require_openfoam

ROOT = Path(__file__).resolve().parents[1]
URL = "http://127.0.0.1:8000"  # unused by the ODE chemistry


def test_a_stopped_ode_run_goes_on_from_its_last_complete_time(tmp_path):
    require_openfoam()
    full = premixed_run(tmp_path / "full", URL, "h2-air", "ode", 1.0, 2e-4)
    # a stopped run: the same case cut after 1e-4 s, its last written time half written
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)
    for t, folder in time_directories(stopped):
        if t > 1e-4 + 1e-12:
            shutil.rmtree(folder)
    written = [(t, d) for t, d in time_directories(stopped) if t > 0]
    (written[-1][1] / "T").unlink()
    (stopped / "log.reactingFoam").write_text("stopped\n")

    resumed = premixed_run(stopped, URL, "h2-air", "ode", 1.0, 2e-4, resume=True)
    log = (stopped / "log.reactingFoam").read_text()
    first = float(re.search(r"^Time = (\S+)", log, flags=re.M).group(1))
    assert first == pytest.approx(written[-2][0] + 1e-6, rel=1e-9)  # from the last complete time
    assert (stopped / "log.reactingFoam.1").read_text() == "stopped\n"
    assert [t for t, _ in time_directories(stopped)] == [t for t, _ in time_directories(tmp_path / "full")]
    end_full = read_internal_field(time_directories(tmp_path / "full")[-1][1] / "T")
    end_resumed = read_internal_field(time_directories(stopped)[-1][1] / "T")
    print(f"resumed vs uninterrupted: max |dT| {np.abs(end_resumed - end_full).max():.3g} K, "
          f"speed {resumed.speed_m_s:.6f} vs {full.speed_m_s:.6f} m/s")
    print(f"peak T {resumed.peak_temperature_k - full.peak_temperature_k:+.3g} K, burnt T "
          f"{resumed.burnt_temperature_k - full.burnt_temperature_k:+.3g} K, heat release by "
          f"band {resumed.heat_release_w} vs {full.heat_release_w}")
    # Not to the bit: the ODE solver's per-cell step sizes are not written, so seulex starts
    # them afresh (within its relTol 1e-4); the flame front then sits a hair apart, and the
    # figures a reference is used for stay far inside the loop's targets (3 %, 10 K).
    assert resumed.speed_m_s == pytest.approx(full.speed_m_s, rel=1e-3)
    assert abs(resumed.peak_temperature_k - full.peak_temperature_k) < 0.5
    assert np.abs(end_resumed - end_full).max() < 20.0

    # without resume a used folder is refused, not silently reused
    with pytest.raises(InputError, match="exists and is not empty"):
        premixed_run(stopped, URL, "h2-air", "ode", 1.0, 2e-4)
    # a folder holding a stopped run of another case is written afresh
    other = spec_from_options("flame1d", "h2-air", 300.0, 1.0, 0.8, None, None, chemistry="ode",
                              url=URL, end_time_s=2e-4)
    assert prepare_case(other, stopped, resume=True) is False
    assert '"phi": 0.8' in (stopped / CASE_INFO).read_text()
    assert [t for t, _ in time_directories(stopped)] == [0.0]


def test_a_solver_dies_with_the_run_that_started_it(tmp_path):
    """A killed ``deepkin refine`` leaves no OpenFOAM solver writing on into the case its next
    run resumes: the applications run with ``die_with_parent`` (PR_SET_PDEATHSIG)."""
    from tests.helpers.processes import kill_parent_and_wait, start_parent

    pid_file = tmp_path / "child.pid"
    parent, child = start_parent(
        "import subprocess, sys, time\n"
        "from couplers.openfoam.foam import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '120'], preexec_fn=die_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n", pid_file, wait_s=30)
    if not kill_parent_and_wait(parent, child):
        pytest.fail("the child outlived its parent by 10 s")


def test_a_library_that_would_not_load_is_named(tmp_path):
    """A chemistry library whose libtorch is gone (another install rebuilt the shared one, or its
    venv was removed) is caught before a run, naming the missing library."""
    import subprocess

    from couplers.openfoam.build import library_path, library_problem

    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("gcc and ldd are needed")
    assert "is not built" in library_problem(tmp_path)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "gone.c").write_text("int gone(void) { return 1; }\n")
    (stub / "lib.c").write_text("int gone(void);\nint use(void) { return gone(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(stub / "libgone.so"), str(stub / "gone.c")],
                   check=True)
    library = library_path(tmp_path)
    library.parent.mkdir(parents=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(stub / "lib.c"),
                    f"-L{stub}", "-lgone", f"-Wl,-rpath,{stub}"], check=True)
    assert library_problem(tmp_path) is None
    (stub / "libgone.so").unlink()
    assert library_problem(tmp_path) == (
        f"the deepkin chemistry library {library} does not load: libgone.so not found (built "
        "against another torch install)")
