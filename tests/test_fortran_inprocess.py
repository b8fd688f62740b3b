"""The Fortran example (examples/fortran/deepkin_step.f90, through couplers/fortran) in-process:
linked with the client library's libtorch backend, it steps a model file of `deepkin export` as
Python's Integrator does (to the digits it prints) and reports the cells it leaves as given. Its
run against a live server is in tests/test_couplers_client.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kinetics.integrator import Integrator
from kinetics.model.registry import resolve_model
from tests.conftest import run_cli
from tests.helpers.models import write_test_model
from tests.helpers.toolchain import build, need
from tests.test_c_inprocess import CELL_FLAGS, build_libtorch_client

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(r"cell (\d): T +(\S+) -> +(\S+) K, Y_H2O +(\S+), sum Y +(\S+), flag (\d) \((.+)\)")
# The example prints T' with 12 decimals and Y_H2O with 16 significant digits: the bound of an
# answer with the same bits as Python's (tests/test_c_inprocess.py checks the bits from C).
T_BOUND_K, Y_BOUND_REL = 1e-12, 1e-15


@pytest.fixture(scope="module")
def step_f(tmp_path_factory) -> Path:
    """The example built with gfortran against the libtorch-enabled client library."""
    fc = [need("gfortran"), "-O2", "-Wall", "-Wextra", "-Werror", "-std=f2008"]
    d = tmp_path_factory.mktemp("fortran-inprocess")
    objects, link = build_libtorch_client(d)
    build([*fc, "-c", str(ROOT / "couplers/fortran/deepkin_client.f90")], d)
    build([*fc, str(ROOT / "examples/fortran/deepkin_step.f90"), *objects, "-o", "step_f",
           *link, "-lstdc++"], d)
    return d / "step_f"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(model file, its export) of a shipped model and of a small random-weight one whose
    frozen temperature (1100 K) and domain (300-1500 K) flag the example's first and last cells."""
    d = tmp_path_factory.mktemp("fortran-models")
    small = write_test_model(d / "small.safetensors", frozen_temperature_k=1100.0,
                             temperature_k=(300.0, 1500.0))
    out = {}
    for name, path in (("h2-air", resolve_model("h2-air")), ("small", small)):
        out[name] = (path, d / f"{name}.pt")
        proc = run_cli("export", str(path), "-o", str(out[name][1]))
        assert proc.returncode == 0, proc.stderr
    return out


def _example_states(integrator: Integrator) -> np.ndarray:
    """The example's 4 cells: stoichiometric H2/air at 1 atm, 1000, 1200, 1400, 1600 K."""
    states = np.zeros((4, 2 + len(integrator.species)))
    states[:, 0] = 1000.0 + 200.0 * np.arange(4)
    states[:, 1] = 101325.0
    for name, y in (("H2", 0.0285), ("O2", 0.2264), ("N2", 0.7451)):
        states[:, 2 + integrator.species.index(name)] = y
    return states


@pytest.mark.parametrize("model, expected_flags", [("h2-air", [2, 0, 0, 0]),  # 1000 K: below its domain
                                                   ("small", [1, 0, 0, 2])])  # frozen; above its domain
def test_the_fortran_example_steps_a_model_file_as_python_does(step_f, models, model,
                                                                expected_flags):
    model_path, exported = models[model]
    run = subprocess.run([str(step_f), str(exported), model], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("ok")
    cells = CELL.findall(run.stdout)
    assert [int(c[0]) for c in cells] == [0, 1, 2, 3], run.stdout
    flags = np.array([int(c[5]) for c in cells])
    assert flags.tolist() == expected_flags

    integrator = Integrator.load(model_path, device="cpu", dtype="float32")  # the export's dtype
    states = _example_states(integrator)
    result = integrator.advance(states)
    assert np.array_equal(flags == CELL_FLAGS["frozen"], result.frozen)
    assert np.array_equal(flags == CELL_FLAGS["fallback"], result.fallback)  # Python: Cantera's
    h2o = 2 + integrator.species.index("H2O")
    for (_, t0, t1, y_h2o, _, flag, meaning), given, stepped in zip(cells, states, result.states):
        assert float(t0) == given[0]
        expected = stepped if flag == "0" else given  # a flagged cell comes back as given
        assert abs(float(t1) - expected[0]) <= T_BOUND_K, (t1, expected[0])
        assert abs(float(y_h2o) - expected[h2o]) <= Y_BOUND_REL * abs(expected[h2o]), (y_h2o, expected[h2o])
        assert meaning == {"0": "stepped by the networks", "1": "frozen: as given",
                           "2": "not stepped: yours to step"}[flag]
    if model == "h2-air":  # real rates: the networks moved the hot cells
        assert abs(float(cells[3][2]) - 1600.0) > 1e-3
    assert (f"cells 4, frozen {result.n_frozen}, fallback {result.n_fallback}, substeps 1\n"
            in run.stdout)


def test_a_missing_model_file_is_one_line(step_f, tmp_path):
    run = subprocess.run([str(step_f), f"file://{tmp_path}/missing.pt", "h2-air"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1
    assert re.fullmatch(r"error: open: model file \S+missing\.pt does not exist\n", run.stdout), \
        run.stdout
