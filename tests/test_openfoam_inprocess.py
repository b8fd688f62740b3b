"""The OpenFOAM chemistry solver's in-process mode (``deepkinCoeffs { modelFile ...; }``, written
by ``deepkin openfoam case/export --chemistry deepkin-inprocess``): every rank loads the file of
``deepkin export`` and steps its own cells through the C library's libtorch backend, no server.

Real reactingFoam runs of the 1D premixed H2/air flame: the in-process flame equals the service's
(same model, same case) to 1e-6 K; 2 MPI ranks equal 1; the cells the step leaves to another
integrator are counted in the log and stepped by OpenFOAM's ODE chemistry (a model whose domain
holds no cell runs exactly as OpenFOAM's own ``ode`` chemistry); a corrupt file, a model of
another mechanism and another species list are each one FatalError line naming the cause.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from couplers.openfoam.export import MODEL_FILE
from couplers.openfoam.foam import read_internal_field, run_application
from couplers.openfoam.results import step_counts
from service.live_server import LiveServer
from tests.helpers.models import write_test_model
from tests.helpers.openfoam import (
    SHIPPED_MODELS,
    TOKEN,
    build_library,
    deepkin,
    require_openfoam,
    run_solver,
    set_entry,
    solver_error,
    write_case,
)

MODEL = "h2-air-flame"
FAST_STEPS = 100  # the cases the other tests copy
LONG_STEPS = 1000
CELLS = 400
AIR = "O2:1,N2:3.76"


@pytest.fixture(scope="module")
def library() -> Path:
    require_openfoam()
    return build_library()


def _flame_case(folder: Path, steps: int, model: str = MODEL, *options: str) -> Path:
    """``deepkin openfoam case flame1d --chemistry deepkin-inprocess`` of ``steps`` steps of 1 us."""
    return write_case("flame1d", folder, "--model", model, "--chemistry", "deepkin-inprocess",
                      "--end-time", f"{steps}e-6", *options)


def _reexport(case: Path, model: str, chemistry: str, *options: str) -> None:
    """``deepkin openfoam export MODEL CASE --chemistry CHEMISTRY`` (same mesh and fields)."""
    run = deepkin("openfoam", "export", model, str(case), "--chemistry", chemistry, *options)
    assert run.returncode == 0, run.stdout + run.stderr


def _final(case: Path, steps: int, field: str = "T") -> np.ndarray:
    return read_internal_field(case / f"{steps * 1e-6:g}" / field)


@pytest.fixture(scope="module")
def inprocess_case(library, tmp_path_factory) -> Path:
    """A 400-cell in-process flame case of FAST_STEPS steps, written once (tests copy it)."""
    return _flame_case(tmp_path_factory.mktemp("inprocess") / "case", FAST_STEPS)


def test_case_names_the_model_file_and_the_library(inprocess_case, library):
    chemistry = (inprocess_case / "constant" / "chemistryProperties").read_text()
    assert re.search(r'modelFile\s+"<constant>/deepkin-model.pt";', chemistry)
    assert "url" not in re.search(r"deepkinCoeffs\s*\{(.*?)\}", chemistry, flags=re.S).group(1)
    assert (inprocess_case / "constant" / MODEL_FILE).stat().st_size > 1000
    assert str(library) in (inprocess_case / "system" / "controlDict").read_text()


def _compare_with_service(template: Path, tmp_path: Path, steps: int) -> None:
    """The in-process run of ``template`` and the service's run of the same case: the same
    temperatures to 1e-6 K after ``steps`` steps, the same per-step counts, no fallback cell
    (the service steps those with Cantera, the in-process mode with OpenFOAM's ODE)."""
    local, served = tmp_path / "local", tmp_path / "served"
    shutil.copytree(template, local)
    shutil.copytree(template, served)
    log = run_solver("reactingFoam", local)
    assert "in-process from" in log and "FOAM Warning" not in log
    with LiveServer(SHIPPED_MODELS, "--token", TOKEN) as live:
        _reexport(served, MODEL, "deepkin", "--url", live.url)
        run_solver("reactingFoam", served)
    ours, theirs = step_counts(local / "log.reactingFoam"), step_counts(served / "log.reactingFoam")
    assert ours.steps == theirs.steps == steps
    assert (ours.cells, ours.frozen, ours.fallback) == (theirs.cells, theirs.frozen, theirs.fallback)
    assert ours.fallback == 0
    t_local, t_served = _final(local, steps), _final(served, steps)
    assert t_local.shape == (CELLS,) and t_local.max() > 1900  # a burning flame, not a cold field
    assert not np.array_equal(t_local, read_internal_field(local / "0" / "T"))
    difference = float(np.abs(t_local - t_served).max())
    oh = float(np.abs(_final(local, steps, "OH") - _final(served, steps, "OH")).max())
    print(f"in-process vs service after {steps} steps: max |dT| {difference:.3e} K, max |dY_OH| {oh:.3e}")
    assert difference <= 1e-6
    assert oh <= 1e-9


def test_inprocess_flame_equals_the_service_flame_1000_steps(library, tmp_path):
    """1,000 steps of 1 us (~50 s for both runs on 2 busy cores)."""
    template = _flame_case(tmp_path / "template", LONG_STEPS)
    _compare_with_service(template, tmp_path, LONG_STEPS)


def test_two_ranks_equal_one_rank(inprocess_case, tmp_path):
    steps = 30
    serial, parallel = tmp_path / "one", tmp_path / "two"
    for case in (serial, parallel):
        shutil.copytree(inprocess_case, case)
        set_entry(case / "system" / "controlDict", "endTime", f"{steps}e-6")
        set_entry(case / "system" / "controlDict", "writeInterval", str(steps))
    run_solver("reactingFoam", serial)
    run_application("decomposePar", parallel)
    log = run_solver("reactingFoam", parallel, ranks=2)
    assert "nProcs : 2" in log and "in-process from" in log
    run_application("reconstructPar", parallel)
    one, two = step_counts(serial / "log.reactingFoam"), step_counts(parallel / "log.reactingFoam")
    assert one.steps == two.steps == steps
    assert two.cells == one.cells == steps * CELLS  # summed over the ranks
    assert two.frozen == one.frozen
    differences = {}
    for field, tolerance in (("T", 0.01), ("H2", 1e-6), ("OH", 1e-6), ("H2O", 1e-6)):
        a, b = _final(serial, steps, field), _final(parallel, steps, field)
        assert a.shape == b.shape == (CELLS,)
        differences[field] = float(np.abs(a - b).max())
        assert differences[field] < tolerance, field
    print(f"in-process, 2 ranks vs 1 after {steps} steps: max |dT| {differences['T']:.2e} K, "
          f"max |dY_OH| {differences['OH']:.2e}")


def _random_model_case(folder: Path, steps: int, temperature_k: tuple[float, float]) -> Path:
    """An in-process flame case of a small random-weight model on h2o2.yaml whose training
    temperatures are ``temperature_k`` (K; the cells outside go to OpenFOAM's ODE), nothing
    frozen."""
    model = write_test_model(folder / "random.safetensors", temperature_k=temperature_k)
    return _flame_case(folder / "case", steps, str(model), "--fuel", "H2:1", "--oxidizer", AIR)


def test_hot_cells_outside_the_domain_fall_back_and_are_counted(library, tmp_path):
    steps = 10
    case = _random_model_case(tmp_path, steps, (250.0, 1000.0))
    run_solver("reactingFoam", case)
    counts = step_counts(case / "log.reactingFoam")
    assert counts.steps == steps and counts.frozen == 0
    hot = int((read_internal_field(case / "0" / "T") > 1200.0).sum())
    assert hot > 50  # the burnt side of the flame
    lines = re.findall(r"^deepkin: cells \d+, frozen \d+, fallback (\d+),.*by ode ([0-9.eE+-]+) s",
                       (case / "log.reactingFoam").read_text(), flags=re.M)
    assert len(lines) == steps
    first = int(lines[0][0])
    assert hot <= first < CELLS  # every hot cell, not every cell
    assert all(float(seconds) > 0 for _, seconds in lines)  # the ODE stepped them
    temps = _final(case, steps)
    assert np.isfinite(temps).all() and temps.max() > 1900
    print(f"fallback: {first} of {CELLS} cells at the first step ({hot} above 1200 K), "
          f"{counts.fallback} cell-steps in {steps} steps")


def test_a_model_that_covers_no_cell_runs_as_openfoams_ode(library, tmp_path):
    """Every cell falls back: the run is OpenFOAM's ode chemistry (seulex, odeCoeffs), cell by
    cell, and its fields are those of the ode chemistry's own run of the case."""
    steps = 10
    case = _random_model_case(tmp_path, steps, (5000.0, 6000.0))
    ode = tmp_path / "ode"
    shutil.copytree(case, ode)
    _reexport(ode, str(tmp_path / "random.safetensors"), "ode")
    run_solver("reactingFoam", case)
    run_solver("reactingFoam", ode)
    counts = step_counts(case / "log.reactingFoam")
    assert counts.fallback == counts.cells == steps * CELLS
    for field in ("T", "H2O", "OH"):
        ours, theirs = _final(case, steps, field), _final(ode, steps, field)
        scale = 1.0 if field == "T" else 1e-9
        assert np.abs(ours - theirs).max() <= scale * 1e-6, field
    assert not np.array_equal(_final(case, steps, "OH"), read_internal_field(case / "0" / "OH"))


def test_a_corrupt_model_file_is_one_fatal_error(inprocess_case, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(inprocess_case, case)
    (case / "constant" / MODEL_FILE).write_bytes(b"PK\x03\x04 not a TorchScript archive" * 10)
    error = solver_error("reactingFoam", case)
    assert "\n" not in error
    assert "libtorch cannot load it" in error and MODEL_FILE in error


def test_a_missing_model_file_is_one_fatal_error(inprocess_case, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(inprocess_case, case)
    (case / "constant" / MODEL_FILE).unlink()
    error = solver_error("reactingFoam", case)
    assert "\n" not in error and "does not exist" in error and "deepkin export" in error


@pytest.fixture(scope="module")
def methane_file(tmp_path_factory) -> Path:
    """A small random model on GRI-Mech 3.0, exported (another mechanism, other species)."""
    folder = tmp_path_factory.mktemp("gri")
    model = write_test_model(folder / "gri.safetensors", mechanism="gri30.yaml")
    out = folder / "gri.pt"
    run = deepkin("export", str(model), "-o", str(out))
    assert run.returncode == 0, run.stderr
    return out


def test_a_model_of_another_mechanism_is_one_fatal_error(inprocess_case, methane_file, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(inprocess_case, case)
    shutil.copyfile(methane_file, case / "constant" / MODEL_FILE)
    error = solver_error("reactingFoam", case)
    assert "\n" not in error
    assert "another mechanism" in error and "mechanism sha256" in error


def test_a_model_with_other_species_is_one_fatal_error(inprocess_case, methane_file, tmp_path):
    """Without mechanismSha256 to check, the species lists are compared by name."""
    case = tmp_path / "case"
    shutil.copytree(inprocess_case, case)
    shutil.copyfile(methane_file, case / "constant" / MODEL_FILE)
    path = case / "constant" / "chemistryProperties"
    path.write_text(re.sub(r"^\s*mechanismSha256[^;]*;\n", "", path.read_text(), flags=re.M))
    error = solver_error("reactingFoam", case)
    assert "\n" not in error
    assert "species differ" in error and "CH4" in error
