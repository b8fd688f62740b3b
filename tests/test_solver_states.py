"""The ``solver_states`` source: states a flow solver visited, read from a states file, labelled
by Cantera like any manifold row and spread by the scattered sources of the same run; appended to
a dataset written before the source existed; refusals of bad files in one line."""

from __future__ import annotations

import json
from pathlib import Path

import cantera as ct
import h5py
import numpy as np
import pytest

from mechanisms.dataset_file import SOURCE_NAMES, read_dataset
from mechanisms.reactor import LABEL_TOLERANCES
from mechanisms.states_file import file_sha256, read_states, write_states
from tests.conftest import run_cli

ZERO = [f"--rows={s}=0" for s in SOURCE_NAMES if s != "solver_states"]
H2 = ["--mechanism", "h2o2.yaml", "--fuel", "H2:1", "--T0", "1100", "--pressure-atm", "1",
      "--phi", "1", "--workers", "0", "-q"]


def _trajectory_states(n: int = 240) -> tuple[np.ndarray, list[str]]:
    """States of a 0D H2/air ignition (1100 K, 2 atm), columns in a solver's own species order
    (reversed) and without AR, as a solver that lacks a species writes them."""
    gas = ct.Solution("h2o2.yaml")
    gas.TPX = 1100.0, 2 * ct.one_atm, "H2:2,O2:1,N2:3.76"
    net = ct.ReactorNet([reactor := ct.IdealGasConstPressureReactor(gas, clone=True)])
    rows = []
    for t in np.geomspace(1e-6, 2e-3, n):
        net.advance(t)
        rows.append([reactor.phase.T, reactor.phase.P, *reactor.phase.Y])
    states = np.array(rows)
    keep = [k for k in reversed(range(gas.n_species)) if gas.species_names[k] != "AR"]
    return np.hstack([states[:, :2], states[:, [2 + k for k in keep]]]), \
        [gas.species_names[k] for k in keep]


@pytest.fixture(scope="module")
def states_file(tmp_path_factory) -> Path:
    states, species = _trajectory_states()
    path = tmp_path_factory.mktemp("states") / "run.states.h5"
    write_states(path, states, species, origin="a 0D ignition, 1100 K, 2 atm")
    return path


def test_states_file_round_trip(states_file):
    states, species, origin = read_states(states_file)
    assert states.shape == (240, 2 + 9) and species[0] == "N2" and "AR" not in species
    assert origin == "a 0D ignition, 1100 K, 2 atm"


def test_solver_states_are_labelled_and_spread_around(states_file, tmp_path):
    out = tmp_path / "dagger.h5"
    proc = run_cli("sample", "-o", str(out), *H2, *ZERO, "--rows", "solver_states=150",
                   "--rows", "perturbed=60", "--solver-states", str(states_file),
                   "--task-rows", "50", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    inputs, targets, source = read_dataset(out)
    names = np.array(SOURCE_NAMES)[source]
    assert (names == "solver_states").sum() == 150 and (names == "perturbed").sum() == 60
    # every solver row is one of the file's states, in the mechanism's species order (AR = 0)
    gas = ct.Solution("h2o2.yaml")
    raw, species, _ = read_states(states_file)
    mapped = np.zeros((len(raw), 2 + gas.n_species))
    mapped[:, :2] = raw[:, :2]
    mapped[:, [2 + gas.species_index(s) for s in species]] = raw[:, 2:]
    solver = inputs[names == "solver_states"]
    assert len(np.unique(solver, axis=0)) == 150
    for row in solver[::15]:
        assert np.isclose(mapped, row, rtol=1e-12, atol=1e-15).all(axis=1).any()
    assert (solver[:, 2 + gas.species_index("AR")] == 0).all()
    # the labels are Cantera's constant-pressure step of dt (1 us)
    for i in np.flatnonzero(names == "solver_states")[::30]:
        gas.TPY = inputs[i, 0], inputs[i, 1], inputs[i, 2:]
        reactor = ct.IdealGasConstPressureReactor(gas, clone=True)
        net = ct.ReactorNet([reactor])
        net.rtol, net.atol = 1e-12, 1e-22
        net.advance(1e-6)
        assert abs(targets[i, 0] - reactor.phase.T) <= 10 * LABEL_TOLERANCES.rtol * reactor.phase.T
        assert np.abs(targets[i, 2:] - reactor.phase.Y).max() <= LABEL_TOLERANCES.rtol
    # the perturbed rows start from the solver's states (the run's only manifold rows): their
    # temperatures lie within the file's span widened by the perturbation
    t_file = raw[:, 0]
    t_perturbed = inputs[names == "perturbed", 0]
    span = t_file.max() - t_file.min()
    assert t_perturbed.min() > t_file.min() - 0.11 * span
    assert t_perturbed.max() < t_file.max() + 0.11 * span
    with h5py.File(out, "r") as h5:
        run = json.loads(h5.attrs["runs"])[0]
    assert run["solver_states"] == [{
        "path": str(states_file), "sha256": file_sha256(states_file),
        "origin": "a 0D ignition, 1100 K, 2 atm", "rows_in_file": 240, "rows_kept": 240}]


def test_more_rows_than_states_takes_them_all_and_says_so(states_file, tmp_path):
    out = tmp_path / "all.h5"
    proc = run_cli("sample", "-o", str(out), *H2, *ZERO, "--rows", "solver_states=1000",
                   "--solver-states", str(states_file), "--solver-states", str(states_file))
    assert proc.returncode == 0, proc.stderr
    assert "240 distinct labellable states, fewer than rows.solver_states (1000)" in proc.stderr
    assert len(read_dataset(out)[0]) == 240  # the same file twice: its states once


def test_appending_to_a_file_written_before_the_source_existed(states_file, tmp_path):
    """A dataset whose source list ends at ``equilibrium`` (as every file before this source)
    takes solver rows: its list is extended, its rows keep their codes."""
    old = tmp_path / "old.h5"
    run_cli("sample", "-o", str(old), *H2, *ZERO, "--rows", "autoignition=80", check=True)
    with h5py.File(old, "r+") as h5:
        h5.attrs["source_names"] = json.dumps(list(SOURCE_NAMES[:7]))
    before = read_dataset(old)
    proc = run_cli("sample", "-o", str(old), *H2, *ZERO, "--rows", "solver_states=40",
                   "--solver-states", str(states_file), "--append")
    assert proc.returncode == 0, proc.stderr
    inputs, _, source = read_dataset(old)
    with h5py.File(old, "r") as h5:
        assert json.loads(h5.attrs["source_names"]) == list(SOURCE_NAMES)
    np.testing.assert_array_equal(inputs[:80], before[0])
    assert [SOURCE_NAMES[s] for s in np.unique(source)] == ["autoignition", "solver_states"]
    assert (source[80:] == SOURCE_NAMES.index("solver_states")).all() and len(source) == 120


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_states_files_are_refused_in_one_line(states_file, tmp_path):
    def sample(*extra: str) -> str:
        out = tmp_path / "x.h5"
        line = _one_line_error(run_cli("sample", "-o", str(out), *H2, *ZERO,
                                       "--rows", "solver_states=10", *extra))
        assert not out.exists()
        return line

    assert "solver_states.files: rows.solver_states is 10 but no states file" in sample()
    assert "solver_states.files[0]: " in sample("--solver-states", str(tmp_path / "none.h5"))
    assert "does not exist" in sample("--solver-states", str(tmp_path / "none.h5"))
    states, species, _ = read_states(states_file)
    methane = tmp_path / "ch4.states.h5"
    write_states(methane, np.hstack([states, states[:, 2:3]]), [*species, "CH4"])
    assert "solver_states.files[0]: species CH4 are not in the mechanism" in sample(
        "--solver-states", str(methane))
    damaged = tmp_path / "damaged.states.h5"
    bad = states.copy()
    bad[7, 2:] *= 2.0
    write_states(damaged, bad, species)
    assert "row 7's mass fractions sum to 2" in sample("--solver-states", str(damaged))
    dataset = tmp_path / "a-dataset.h5"
    run_cli("sample", "-o", str(dataset), *H2, *ZERO, "--rows", "autoignition=20", check=True)
    line = sample("--solver-states", str(states_file), "--solver-states", str(dataset))
    assert "solver_states.files[1]: " in line and "is not a deepkin states file" in line


def test_band_k_draws_evenly_over_temperature_bands(states_file, tmp_path):
    """A 0D ignition spends most of its states in the induction and the burnt gas; drawn per
    200 K band, every band gives the same number of rows as far as it has them."""
    cfg = tmp_path / "bands.yaml"
    cfg.write_text("solver_states: {band_k: 200}\n")
    out = tmp_path / "bands.h5"
    proc = run_cli("sample", "-c", str(cfg), "-o", str(out), *H2, *ZERO,
                   "--rows", "solver_states=60", "--solver-states", str(states_file))
    assert proc.returncode == 0, proc.stderr
    chosen = np.floor(read_dataset(out)[0][:, 0] / 200).astype(int)
    available = np.floor(read_states(states_file)[0][:, 0] / 200).astype(int)
    bands, have = np.unique(available, return_counts=True)
    got = np.array([(chosen == b).sum() for b in bands])
    full = got < have  # bands that gave fewer than all their states got the same share
    assert full.any() and got[full].max() - got[full].min() <= 1
    assert (got[~full] == have[~full]).all() and got.sum() == 60
    cfg.write_text("solver_states: {band_k: 0}\n")
    line = _one_line_error(run_cli("sample", "-c", str(cfg), "-o", str(out.with_suffix(".x")),
                                   *H2, *ZERO))
    assert "solver_states.band_k: must be a number > 0" in line


def test_an_unfinished_run_whose_states_file_changed_is_refused(tmp_path):
    """The file's tasks hold the old file's states: resuming on other states would mix them."""
    states, species = _trajectory_states(120)
    source = tmp_path / "run.states.h5"
    write_states(source, states, species)
    out = tmp_path / "unfinished.h5"
    args = ["sample", "-o", str(out), *H2, *ZERO, "--rows", "solver_states=50",
            "--solver-states", str(source)]
    run_cli(*args, check=True)
    with h5py.File(out, "r+") as h5:  # as a run killed before its end leaves the file
        runs = json.loads(h5.attrs["runs"])
        runs[-1]["complete"] = False
        h5.attrs["runs"] = json.dumps(runs)
        h5.attrs["complete"] = False
    write_states(source, states[::2], species)
    line = _one_line_error(run_cli(*args))
    assert f"solver_states.files: {source} changed since this run of {out} started" in line
    write_states(source, states, species)  # the same bytes as at the start
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert len(read_dataset(out)[0]) == 50
