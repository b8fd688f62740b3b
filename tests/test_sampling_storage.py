"""What a full disk or a damaged output does to `deepkin sample`: one line, the journal kept, the
file rebuilt from it by the same command (real tmpfs mounts, real HDF5 files)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from mechanisms import load_mechanism
from mechanisms.errors import StorageError
from mechanisms.executor import InlineExecutor
from mechanisms.reactor import REACTOR_NAME
from sampling.config import SamplingConfig
from sampling.dataset_writer import DatasetWriter
from sampling.journal import Journal
from sampling.pipeline import run_sampling
from sampling.verification import verify_run
from tests.conftest import run_cli
from tests.test_sampling_runs import arrays, assert_same_arrays

# The reproducer, smaller: 2200 rows of four sources in 34 tasks, labelled inline.
RECIPE = """rows: {autoignition: 1200, free_flame: 0, counterflow: 0, multiscale: 600,
       perturbed: 300, emcs: 0, equilibrium: 100}
task_rows: 100
seed: 5
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "sample.yaml"
    path.write_text(RECIPE)
    return path


def sample(recipe: Path, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("sample", "-c", str(recipe), "-o", str(out), "--workers", "0", "-q",
                   timeout=timeout)


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "reference.h5"
    proc = sample(recipe, out)
    assert proc.returncode == 0, proc.stderr
    return out


class SmallDisk:
    """A real tmpfs of a given size at ``path`` (root only); skips the test where mounting is
    not permitted."""

    def __init__(self, path: Path):
        self.path = path
        self.mounted = False
        path.mkdir()

    def mount(self, size: str) -> None:
        options = f"remount,size={size}" if self.mounted else f"size={size}"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path) -> SmallDisk:
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.unmount()


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


# 16k: the file cannot be created; 64k: a journal part does not fit; 384k: an HDF5 write fails
# during the run; 1m: at the end, while the file is finished.
@pytest.mark.parametrize("size", ["16k", "64k", "384k", "1m"])
def test_full_disk_stops_with_one_line_and_the_rerun_finishes_the_same_dataset(
        recipe, reference, small_disk, size, tmp_path):
    small_disk.mount(size)
    out = small_disk.path / "data.h5"
    proc = sample(recipe, out)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
    assert "data.h5.journal" in lines[0] and "rerun the same command" in lines[0]
    assert not proc.stdout.startswith("wrote")
    assert (small_disk.path / "data.h5.journal" / "meta.json").is_file()
    # Whatever is left is not a complete dataset, and nothing that reads it crashes.
    info = run_cli("dataset", "info", str(out))
    assert info.returncode == 1 or "INCOMPLETE" in info.stdout, info.stdout + info.stderr
    trained = run_cli("train", str(out), "-o", str(tmp_path / "m.safetensors"), "-q")
    assert trained.returncode == 1 and trained.stderr.startswith("error: dataset:"), \
        trained.stderr

    small_disk.mount("64m")
    proc = sample(recipe, out)
    assert proc.returncode == 0, proc.stderr
    assert "resuming run 0" in proc.stderr
    assert not (small_disk.path / "data.h5.journal").exists()
    with h5py.File(out, "r") as h5:
        assert bool(h5.attrs["complete"])
    assert_same_arrays(reference, out)


class _Killed(Exception):
    """Stands for SIGKILL in the middle of a run."""


class _StopAfter(InlineExecutor):
    """Runs tasks inline and stops the run after ``n`` of them, as a kill would."""

    def __init__(self, n: int):
        self.n = n

    def map_unordered(self, fn, jobs):
        for i, item in enumerate(super().map_unordered(fn, jobs)):
            if i == self.n:
                raise _Killed
            yield item


def interrupted_run(recipe: Path, out: Path, tasks: int) -> None:
    """A run of ``recipe`` into ``out`` stopped after ``tasks`` tasks: the journal holds them."""
    with pytest.raises(_Killed):
        run_sampling(SamplingConfig.from_yaml(recipe), out, executor=_StopAfter(tasks),
                     progress=False, log=lambda _msg: None)
    assert len(Journal.for_output(out).task_ids()) == tasks


@pytest.mark.parametrize("damage", ["zero bytes", "torn", "not HDF5", "missing"])
def test_a_damaged_output_beside_its_journal_is_rebuilt(recipe, reference, tmp_path, damage):
    out = tmp_path / "data.h5"
    interrupted_run(recipe, out, 20)
    if damage == "zero bytes":
        out.write_bytes(b"")
    elif damage == "torn":
        out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    elif damage == "not HDF5":
        out.write_bytes(np.random.default_rng(0).bytes(50_000))
    else:
        out.unlink()
    proc = sample(recipe, out)
    assert proc.returncode == 0, proc.stderr
    assert "resuming run 0" in proc.stderr and "20 finished task(s)" in proc.stderr
    assert not Journal.for_output(out).directory.exists()
    assert_same_arrays(reference, out)


def _journalled_file(path: Path) -> tuple[DatasetWriter, Journal]:
    """A dataset with one run of three recorded tasks, each saved in the journal first."""
    mech = load_mechanism("h2o2.yaml")
    journal = Journal.for_output(path)
    journal.create({"identity": "test", "run_index": 0, "appending": False})
    writer = DatasetWriter.create(path, mech, 1e-6, 1e-10, 1e-20, REACTOR_NAME)
    writer.start_run({"test": True})
    rng = np.random.default_rng(1)
    for i in range(3):
        rows = rng.random((40, 12))
        journal.save(i, f"r0/multiscale/{i:04d}", rows, rows + 1, 3, "ok")
        writer.append_task(f"r0/multiscale/{i:04d}", rows, rows + 1, 3, "ok")
    writer.write_pending()
    return writer, journal


def test_verification_reads_every_row_back_against_the_journal(tmp_path):
    path = tmp_path / "v.h5"
    writer, journal = _journalled_file(path)
    writer.close()
    verify_run(path, journal, 0)
    with h5py.File(path, "r+") as h5:  # one value of the second task changes on the disk
        h5["targets"][45, 3] += 1e-12
    with pytest.raises(StorageError, match="rows of task r0/multiscale/0001 differ"):
        verify_run(path, journal, 0)
    with h5py.File(path, "r+") as h5:
        h5["targets"][45, 3] -= 1e-12
    verify_run(path, journal, 0)
    journal.save(3, "r0/multiscale/0003", np.zeros((1, 12)), np.zeros((1, 12)), 3, "ok")
    with pytest.raises(StorageError, match="task r0/multiscale/0003 of the journal is not in"):
        verify_run(path, journal, 0)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StorageError, match="cannot be read"):
        verify_run(path, journal, 0)


def test_a_run_is_not_marked_complete_when_finishing_it_fills_the_disk(small_disk):
    small_disk.mount("1m")
    path = small_disk.path / "f.h5"
    writer, journal = _journalled_file(path)
    writer.append_task("r0/multiscale/0003", np.ones((2000, 12)), np.ones((2000, 12)), 3, "ok",
                       flush_every_s=1e9)  # queued: written by finish_run
    free = shutil.disk_usage(small_disk.path).free
    (small_disk.path / "filler").write_bytes(b"\0" * free)
    with pytest.raises(StorageError, match="No space left on device"):
        writer.finish_run({}, journal)
    writer.close()
    (small_disk.path / "filler").unlink()
    info = run_cli("dataset", "info", str(path))
    assert info.returncode == 1 or "INCOMPLETE" in info.stdout, info.stdout + info.stderr
    assert journal.exists() and len(journal.task_ids()) == 3


def test_a_second_writer_of_the_same_output_is_refused(recipe, tmp_path):
    out = tmp_path / "busy.h5"
    writer = DatasetWriter.create(out, load_mechanism("h2o2.yaml"), 1e-6, 1e-10, 1e-20,
                                  REACTOR_NAME)
    try:
        proc = sample(recipe, out)
        assert proc.returncode == 1, proc.stderr
        assert error_lines(proc) == [f"error: output: {out} is being written by another process"]
    finally:
        writer.close()
    assert len(arrays(out)[0]) == 0
