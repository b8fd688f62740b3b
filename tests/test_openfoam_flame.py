"""A freely propagating premixed H2/air flame in reactingFoam (1D, fixed deltaT = the model's dt)
on deepkin chemistry from a live server: a short smoke run, the same run on 2 MPI ranks (the
service merging their requests) against 1 rank, and (slow) the flame speed against OpenFOAM's own
ODE chemistry on the same mechanism, with Cantera's reported beside it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from couplers.openfoam.foam import read_internal_field, run_application
from couplers.openfoam.results import case_info, flame_positions, flame_speed, step_counts
from mechanisms.dataset_file import SOURCE_NAMES, read_dataset
from mechanisms.states_file import read_states
from service.live_server import LiveServer
from tests.helpers.openfoam import (
    SHIPPED_MODELS,
    TOKEN,
    build_library,
    deepkin,
    require_openfoam,
    run_solver,
    set_entry,
    write_case,
)

SMOKE_STEPS = 30


@pytest.fixture(scope="module")
def live():
    require_openfoam()
    build_library()
    # a short queue delay lets the two ranks' requests of a step meet in one device call
    with LiveServer(SHIPPED_MODELS, "--token", TOKEN, "--queue-delay-ms", "5") as srv:
        yield srv


@pytest.fixture(scope="module")
def smoke_case(live, tmp_path_factory) -> Path:
    """A 400-cell stoichiometric flame case, 30 steps of 1 us, written once (copied by tests)."""
    return write_case("flame1d", tmp_path_factory.mktemp("flame") / "case", "--url", live.url,
                      "--end-time", f"{SMOKE_STEPS}e-6")


def test_flame_smoke_run(smoke_case, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(smoke_case, case)
    log = run_solver("reactingFoam", case)
    counts = step_counts(case / "log.reactingFoam")
    assert counts.steps == SMOKE_STEPS  # one request per time step
    assert counts.cells == SMOKE_STEPS * 400
    assert 0 < counts.frozen < counts.cells  # the cold inlet side passes through
    network = counts.network_fraction
    print(f"flame smoke: network served {100 * network:.1f} % of cell-steps "
          f"({100 * counts.reacting_network_fraction:.1f} % of the non-frozen ones), "
          f"fallback {counts.fallback} cell-steps")
    assert network > 0.3
    final = case / f"{SMOKE_STEPS * 1e-6:g}"
    temps = read_internal_field(final / "T")
    assert np.isfinite(temps).all() and 1900 < temps.max() < 2600 and temps.min() > 280
    initial = read_internal_field(case / "0" / "T")
    assert not np.array_equal(temps, initial)
    water = read_internal_field(final / "H2O")
    assert water.max() > 0.2  # burnt gas
    assert "ExecutionTime" in log and "FOAM Warning" not in log


def test_states_of_a_run_are_harvested_and_labelled(smoke_case, tmp_path):
    """`deepkin openfoam states` takes every cell at every written time after the first, in the
    case's species order; `deepkin sample --solver-states` labels them on the model's
    mechanism; a decomposed run gives the same states from its processor folders."""
    case = tmp_path / "case"
    shutil.copytree(smoke_case, case)
    set_entry(case / "system" / "controlDict", "writeInterval", "10")
    run_solver("reactingFoam", case)
    harvested = tmp_path / "flame.states.h5"
    proc = deepkin("openfoam", "states", str(case), "-o", str(harvested))
    assert proc.returncode == 0, proc.stderr
    assert "1200 cell states (10 species)" in proc.stdout
    states, species, origin = read_states(harvested)
    assert species == ["H2", "H", "O", "O2", "OH", "H2O", "HO2", "H2O2", "AR", "N2"]
    assert states.shape == (3 * 400, 12) and "3 times 1e-05–3e-05 s" in origin
    last = states[800:]  # the third time, 3e-05 s
    np.testing.assert_array_equal(last[:, 0], read_internal_field(case / "3e-05" / "T"))
    np.testing.assert_array_equal(last[:, 2 + species.index("OH")],
                                  read_internal_field(case / "3e-05" / "OH"))
    relative = tmp_path / "relative.states.h5"  # a case named from its parent folder
    proc = deepkin("openfoam", "states", "case", "-o", relative.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_states(relative)[0], states)
    out = tmp_path / "flame-states.h5"
    zero = [f"--rows={s}=0" for s in SOURCE_NAMES if s != "solver_states"]
    proc = deepkin("sample", "-o", str(out), "--mechanism", "h2o2.yaml", "--rows",
                   "solver_states=60", *zero, "--solver-states", str(harvested),
                   "--T0", "1000", "--pressure-atm", "1", "--phi", "1", "--workers", "0", "-q")
    assert proc.returncode == 0, proc.stderr
    inputs, targets, _ = read_dataset(out)
    assert len(inputs) == 60 and inputs[:, 0].max() > 1500 and np.isfinite(targets).all()
    parallel = tmp_path / "two"
    shutil.copytree(smoke_case, parallel)
    set_entry(parallel / "system" / "controlDict", "writeInterval", "10")
    run_application("decomposePar", parallel)
    run_solver("reactingFoam", parallel, ranks=2)
    both = tmp_path / "two.states.h5"
    assert deepkin("openfoam", "states", str(parallel), "-o", str(both),
                   "--from-time", "2e-5").returncode == 0
    two, _, _ = read_states(both)
    assert two.shape == (400, 12)  # 3e-05 s alone, on two ranks of 200 cells each
    np.testing.assert_allclose(np.sort(two[:, 0]), np.sort(last[:, 0]), atol=0.01)
    proc = deepkin("openfoam", "states", str(tmp_path / "nowhere"), "-o", str(both))
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        f"error: case: {tmp_path / 'nowhere'} is not a folder"]


def test_flame_two_ranks_match_one(smoke_case, live, tmp_path):
    serial, parallel = tmp_path / "one", tmp_path / "two"
    shutil.copytree(smoke_case, serial)
    shutil.copytree(smoke_case, parallel)
    run_solver("reactingFoam", serial)
    before = _batch_counts(live)
    run_application("decomposePar", parallel)
    log = run_solver("reactingFoam", parallel, ranks=2)
    after = _batch_counts(live)
    run_application("reconstructPar", parallel)
    assert "nProcs : 2" in log
    counts = step_counts(parallel / "log.reactingFoam")
    assert counts.steps == SMOKE_STEPS and counts.cells == SMOKE_STEPS * 400  # summed over ranks
    # 2 requests per step; some device calls carried both ranks' requests
    requests = after["sum"] - before["sum"]
    calls = after["count"] - before["count"]
    assert requests == 2 * SMOKE_STEPS
    assert calls < requests, "the service never merged the two ranks' requests"
    end = f"{SMOKE_STEPS * 1e-6:g}"
    differences = {}
    for field, tolerance in (("T", 0.01), ("H2", 1e-6), ("OH", 1e-6), ("H2O", 1e-6)):
        one = read_internal_field(serial / end / field)
        two = read_internal_field(parallel / end / field)
        assert one.shape == two.shape == (400,)
        differences[field] = float(np.abs(one - two).max())
        assert differences[field] < tolerance, field
    print(f"2 ranks vs 1 after {SMOKE_STEPS} steps: max |dT| {differences['T']:.2e} K, max |dY_OH| "
          f"{differences['OH']:.2e}; {requests:g} requests in {calls:g} device calls")


def test_flame_urls_are_spread_over_ranks(smoke_case, live, tmp_path):
    """`urls (A B)`: rank 0 calls A, rank 1 calls B; each server advances its rank's cells."""
    case = tmp_path / "case"
    shutil.copytree(smoke_case, case)
    steps = 5
    set_entry(case / "system" / "controlDict", "endTime", f"{steps}e-06")
    set_entry(case / "system" / "controlDict", "writeInterval", str(steps))
    with LiveServer(SHIPPED_MODELS, "--token", TOKEN) as other:
        chemistry = case / "constant" / "chemistryProperties"
        urls = f'urls ("{live.url}" "{other.url}");'
        chemistry.write_text(re.sub(r'url\s+"[^"]*";', urls, chemistry.read_text()))
        before = _cells(live)
        run_application("decomposePar", case)
        run_solver("reactingFoam", case, ranks=2)
        served = {"A": _cells(live) - before, "B": _cells(other)}
    assert served == {"A": steps * 200, "B": steps * 200}  # 400 cells split in two slabs


def _cells(server) -> float:
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    match = re.search(r'^deepkin_cells_total\{model="h2-air"\} ([0-9.e+]+)', text, flags=re.M)
    return float(match.group(1)) if match else 0.0


def _batch_counts(live) -> dict[str, float]:
    text = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    out = {}
    for key in ("sum", "count"):
        match = re.search(rf'^deepkin_batch_requests_{key}{{model="h2-air"}} ([0-9.e+]+)', text, flags=re.M)
        out[key] = float(match.group(1)) if match else 0.0
    return out


@pytest.mark.slow
def test_flame_speed_deepkin_vs_ode(live, tmp_path):
    """1 ms of flame (1000 steps) with each chemistry; speed from the front's drift over the
    last 0.5 ms. OpenFOAM's laminar transport (unity Schmidt number, Eucken conductivity) is not
    Cantera's, so Cantera's speeds are reported, not compared."""
    speeds = {}
    for chemistry in ("deepkin", "ode"):
        case = write_case("flame1d", tmp_path / chemistry, "--url", live.url, "--chemistry", chemistry,
                          "--end-time", "1e-3")
        run_solver("reactingFoam", case, timeout_s=1800)
        speeds[chemistry] = flame_speed(case)
        times, positions = flame_positions(case)
        assert len(times) == 20 and np.all(np.diff(positions) > 0)  # it drifts, but stays a flame
    info = case_info(tmp_path / "ode")
    counts = step_counts(tmp_path / "deepkin" / "log.reactingFoam")
    print(f"flame speed: deepkin {speeds['deepkin'].speed_m_s:.4f} m/s, OpenFOAM ODE "
          f"{speeds['ode'].speed_m_s:.4f} m/s (difference "
          f"{100 * (speeds['deepkin'].speed_m_s / speeds['ode'].speed_m_s - 1):+.2f} %); Cantera "
          f"mixture-averaged {info['cantera_flame_speed_m_s']:.4f} m/s, unity Lewis number "
          f"{info['cantera_unity_lewis_flame_speed_m_s']:.4f} m/s; network served "
          f"{100 * counts.network_fraction:.1f} % of cell-steps "
          f"({100 * counts.reacting_network_fraction:.1f} % of the non-frozen ones)")
    assert counts.steps == 1000
    assert speeds["deepkin"].speed_m_s == pytest.approx(speeds["ode"].speed_m_s, rel=0.05)
    assert 0.5 < speeds["ode"].speed_m_s < 3.0
