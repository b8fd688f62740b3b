"""Whole `deepkin sample` runs as subprocesses: reproducibility, resume after SIGKILL, an external
Dask cluster, appending, and refusals of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mechanisms.dataset_file import read_dataset
from service.live_server import free_port
from tests.conftest import DEEPKIN, run_cli

REPRO = ["--T0", "1100,1300", "--pressure-atm", "1,10", "--phi", "0.7,1.4",
         "--rows", "autoignition=400", "--rows", "free_flame=0", "--rows", "counterflow=0",
         "--rows", "multiscale=400", "--rows", "perturbed=200", "--rows", "emcs=200",
         "--task-rows", "100", "-q"]
# Larger, so that a kill lands in the middle of the run.
KILL = ["--T0", "1000,1200,1400", "--pressure-atm", "1,5", "--phi", "0.5,1,2",
        "--rows", "autoignition=900", "--rows", "free_flame=0", "--rows", "counterflow=0",
        "--rows", "multiscale=2500", "--rows", "perturbed=1500", "--rows", "emcs=600",
        "--task-rows", "100", "-q"]


def arrays(path: Path) -> tuple[np.ndarray, ...]:
    return read_dataset(path)


def assert_same_arrays(a: Path, b: Path) -> None:
    for x, y in zip(arrays(a), arrays(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def repro_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repro") / "ref.h5"
    run_cli("sample", "-o", str(out), *REPRO, "--seed", "3", "--workers", "2", check=True)
    return out


def test_same_seed_gives_identical_arrays_inline_or_parallel(repro_reference, tmp_path):
    inline = tmp_path / "inline.h5"
    run_cli("sample", "-o", str(inline), *REPRO, "--seed", "3", "--workers", "0", check=True)
    assert_same_arrays(repro_reference, inline)
    other = tmp_path / "other-seed.h5"
    run_cli("sample", "-o", str(other), *REPRO, "--seed", "4", "--workers", "2", check=True)
    a, b = arrays(repro_reference)[0], arrays(other)[0]
    assert a.shape[1] == b.shape[1] and not np.array_equal(a[:len(b)], b[:len(a)])


def test_external_dask_scheduler_with_two_workers(repro_reference, tmp_path):
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        for _ in range(2):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "cluster.h5"
        proc = run_cli("sample", "-o", str(out), *REPRO, "--seed", "3", "--scheduler", address,
                       timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"Dask scheduler {address}" in proc.stderr
        assert_same_arrays(repro_reference, out)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_unreachable_scheduler_is_one_line(tmp_path):
    proc = run_cli("sample", "-o", str(tmp_path / "x.h5"), *REPRO,
                   "--scheduler", f"tcp://127.0.0.1:{free_port()}", timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: scheduler:") and "Traceback" not in proc.stderr


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    reference = tmp_path / "reference.h5"
    run_cli("sample", "-o", str(reference), *KILL, "--seed", "11", "--workers", "2", check=True)

    out = tmp_path / "killed.h5"
    journal = tmp_path / "killed.h5.journal"
    proc = subprocess.Popen([*DEEPKIN, "sample", "-o", str(out), *KILL, "--seed", "11",
                             "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.is_dir() and len(list(journal.glob("*.npz"))) >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with h5py.File(out, "r") as h5:  # readable, incomplete
        assert not bool(h5.attrs["complete"])
        partial_rows = int(h5["tasks/rows"][...].sum())
    # rows reach the HDF5 file in batches; the rest are in the journal and must not be redone
    assert 0 <= partial_rows < len(arrays(reference)[0])

    resumed = run_cli("sample", "-o", str(out), *KILL, "--seed", "11", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run 0" in resumed.stderr
    assert not journal.exists()
    with h5py.File(out, "r") as h5:
        ids = h5["tasks/id"].asstr()[...]
        assert len(ids) == len(set(ids))
        assert bool(h5.attrs["complete"])
    assert_same_arrays(reference, out)


def test_append_adds_a_run_and_refuses_another_mechanism_or_dt(repro_reference, tmp_path):
    out = tmp_path / "grow.h5"
    out.write_bytes(repro_reference.read_bytes())
    n0 = len(arrays(out)[0])
    proc = run_cli("sample", "-o", str(out), *REPRO, "--seed", "9", "--workers", "0", "--append")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as h5:
        assert len(json.loads(h5.attrs["runs"])) == 2
        assert h5["inputs"].shape[0] > n0
    before = _digest(out)
    for extra, reason in ((["--dt", "2e-6"], "dt"),
                          (["--mechanism", "gri30.yaml", "--fuel", "CH4:1"], "another mechanism")):
        proc = run_cli("sample", "-o", str(out), *REPRO, "--workers", "0", "--append", *extra)
        assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
    assert _digest(out) == before


def test_an_appended_run_of_equilibrium_rows_alone_starts_from_the_files_manifold(
        repro_reference, tmp_path):
    """A run with no manifold rows of its own draws its equilibrium-approach states from the
    manifold rows already in the file; without a file to append to it is refused in one line."""
    only = ["--rows", "autoignition=0", "--rows", "free_flame=0", "--rows", "counterflow=0",
            "--rows", "multiscale=0", "--rows", "perturbed=0", "--rows", "emcs=0",
            "--rows", "equilibrium=120", "--task-rows", "60", "-q", "--workers", "0"]
    cfg = tmp_path / "relax.yaml"
    cfg.write_text("equilibrium: {spread: 1.0}\n")
    alone = tmp_path / "alone.h5"
    proc = run_cli("sample", "-c", str(cfg), "-o", str(alone), *REPRO[:6], *only)
    assert proc.returncode != 0 and not alone.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "need manifold rows" in lines[0] and "--append" in lines[0]
    out = tmp_path / "grow.h5"
    out.write_bytes(repro_reference.read_bytes())
    inputs0 = arrays(out)[0]
    proc = run_cli("sample", "-c", str(cfg), "-o", str(out), *REPRO[:6], *only, "--append")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as h5:
        runs = json.loads(h5.attrs["runs"])
        assert len(runs) == 2 and runs[1]["config"]["equilibrium"]["spread"] == 1.0
        names = json.loads(h5.attrs["source_names"])
        new_sources = h5["source"][len(inputs0):]
        assert len(new_sources) == 120
        assert {names[s] for s in new_sources} == {"equilibrium"}
        np.testing.assert_array_equal(h5["inputs"][:len(inputs0)], inputs0)
        assert np.isfinite(h5["targets"][len(inputs0):]).all()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BAD = [
    (["--mechanism", "no-such.yaml"], "mechanism:"),
    (["--mechanism", "nDodecane_Reitz.yaml"], "not an ideal gas"),
    (["--mechanism", "h2o2.yaml", "--phase", "gas"], "phase:"),
    (["--fuel", "H3:1"], "fuel: unknown species 'H3'"),
    (["--oxidizer", "O2:1,N3:3.76"], "oxidizer: unknown species 'N3'"),
    (["--phi", "0"], "phi:"),
    (["--phi", "-1,1"], "phi:"),
    (["--T0", "200"], "temperature_k: 200 K lies outside"),
    (["--T0", "5000"], "temperature_k: 5000 K lies outside"),
    (["--rows", "multiscal=10"], "did you mean 'multiscale'"),
    (["--dt", "0"], "dt:"),
    (["--pressure-atm", "abc"], "pressure_atm:"),
    (["--pressure-atm", "1e6"],
     "pressure_atm: 1e+06 atm lies outside the range of states deepkin samples and steps"),
    (["--seed", "-1"], "seed: must be a whole number >= 0, got -1"),
    (["--scheduler", "notaurl"], "scheduler: 'notaurl' is not a scheduler address"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_readable_line(tmp_path, args, message):
    out = tmp_path / "bad.h5"
    proc = run_cli("sample", "-o", str(out), "--workers", "0", "-q", *args, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_existing_and_unwritable_outputs_are_refused(repro_reference, tmp_path):
    before = _digest(repro_reference)
    proc = run_cli("sample", "-o", str(repro_reference), *REPRO, "--seed", "3", "--workers", "0")
    assert proc.returncode != 0 and "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert _digest(repro_reference) == before
    other = tmp_path / "not-a-dataset.h5"
    other.write_text("precious notes")
    proc = run_cli("sample", "-o", str(other), *REPRO, "--workers", "0")
    assert proc.returncode != 0 and "not a readable dataset" in proc.stderr
    assert other.read_text() == "precious notes"
    for target, reason in ((tmp_path / "missing-dir" / "x.h5", "does not exist"),
                           (tmp_path, "is a directory")):
        proc = run_cli("sample", "-o", str(target), *REPRO, "--workers", "0")
        assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_yaml_config_file_and_unknown_keys(tmp_path):
    cfg = tmp_path / "sample.yaml"
    cfg.write_text("mechanism: h2o2.yaml\nfuel: 'H2:1'\noxidizer: 'O2:1,N2:3.76'\nphi: [1.0]\n"
                   "temperature_k: '1100:1300:2'\npressure_atm: [2]\nseed: 5\n"
                   "rows: {autoignition: 120, free_flame: 0, counterflow: 0, multiscale: 60,"
                   " perturbed: 30, emcs: 20, equilibrium: 20}\n")
    out = tmp_path / "from-config.h5"
    proc = run_cli("sample", "-c", str(cfg), "-o", str(out), "--workers", "0", "-q")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as h5:
        config = json.loads(h5.attrs["sampler_config"])
    assert config["seed"] == 5 and config["temperature_k"] == [1100.0, 1300.0]
    assert config["pressure_atm"] == [2.0]
    assert len(arrays(out)[0]) == 250
    cfg.write_text("mechanism: h2o2.yaml\nphy: [1.0]\n")
    proc = run_cli("sample", "-c", str(cfg), "-o", str(tmp_path / "y.h5"), "--workers", "0")
    assert proc.returncode != 0 and "phy: unknown key (did you mean 'phi'?)" in proc.stderr


@pytest.mark.parametrize("section,message", [
    ({"closest": 0.0}, "equilibrium.closest: must lie in (0, 1)"),
    ({"closest": 1.5}, "equilibrium.closest: must lie in (0, 1)"),
    ({"beyond_fraction": -0.1}, "equilibrium.beyond_fraction: must lie in [0, 1]"),
    ({"spread": -1}, "equilibrium.spread: must lie in [0, 3]"),
])
def test_bad_equilibrium_settings_are_named(tmp_path, section, message):
    cfg = tmp_path / "sample.yaml"
    key, value = next(iter(section.items()))
    cfg.write_text(f"equilibrium: {{{key}: {value}}}\n")
    proc = run_cli("sample", "-c", str(cfg), "-o", str(tmp_path / "x.h5"), "--workers", "0", "-q")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "x.h5").exists()
