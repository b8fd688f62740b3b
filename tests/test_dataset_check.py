"""Nothing a damaged or edited dataset file can do goes unnoticed: `deepkin dataset check`
reports every invariant the writer guarantees, `deepkin train` refuses the file in one line and
writes no model, and a training that cannot produce a model fails (real HDF5 files edited with
h5py the way an attacker would, real CLI subprocesses, real tmpfs and file-size limits)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mechanisms import load_mechanism
from mechanisms.dataset_check import check_dataset
from mechanisms.errors import DeepkinError
from mechanisms.reactor import REACTOR_NAME
from sampling.dataset_writer import DatasetWriter
from sampling.journal import Journal
from tests.conftest import DEEPKIN, run_cli

# Every source, one condition: ~360 rows in ~3 s, inline.
TINY = ["--mechanism", "h2o2.yaml", "--fuel", "H2:1", "--oxidizer", "O2:1,N2:3.76", "--T0", "1200",
        "--pressure-atm", "1", "--phi", "1", "--rows", "autoignition=100", "--rows", "free_flame=40",
        "--rows", "counterflow=40", "--rows", "multiscale=60", "--rows", "perturbed=40",
        "--rows", "emcs=40", "--rows", "equilibrium=40", "--task-rows", "50", "--seed", "3",
        "--workers", "0", "-q"]
TRAIN = "model: {type: mlp, hidden: [8]}\nepochs: 2\ndomain: {check: box}\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    run_cli("sample", "-o", str(out), *TINY, check=True)
    return out


@pytest.fixture(scope="module")
def train_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "train.yaml"
    path.write_text(TRAIN)
    return path


def edited(tiny: Path, folder: Path, edit: Callable[[h5py.File], None]) -> Path:
    """A copy of ``tiny`` with ``edit`` applied through h5py."""
    path = folder / "edited.h5"
    shutil.copy(tiny, path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def set_value(name: str, index: tuple, value: float) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        h5[name][index] = value
    return edit


def set_attr(name: str, value) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        h5.attrs[name] = value
    return edit


def negative_y(h5: h5py.File) -> None:
    """Row 20's H2O at −0.01, its H2 taking up the rest, so that ΣY stays 1."""
    row = h5["inputs"][20]
    row[2 + 5] = -0.01
    row[2] = 1.0 - row[3:].sum()
    h5["inputs"][20] = row


def corrupt_chunk(name: str) -> Callable[[h5py.File], None]:
    """Overwrite the middle of the first gzip chunk of ``name`` on the disk (once h5py has let
    go of the file)."""
    def edit(h5: h5py.File) -> None:
        info = h5[name].id.get_chunk_info(0)
        h5.attrs["_corrupt"] = json.dumps([info.byte_offset + info.size // 2])
    return edit


def finish_corruption(path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        if "_corrupt" not in h5.attrs:
            return
        offset = json.loads(h5.attrs["_corrupt"])[0]
        del h5.attrs["_corrupt"]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 64)


SPECIES_SWAPPED = json.dumps(["H2", "O", "H", "O2", "OH", "H2O", "HO2", "H2O2", "AR", "N2"])
# (case, edit, a fragment of the problem line, found by the cheap checks alone)
ATTACKS = [
    ("NaN input", set_value("inputs", (5, 3), np.nan), "inputs: row 5 holds nan in column H",
     False),
    ("+inf target", set_value("targets", (7, 0), np.inf), "targets: row 7 holds inf in column T",
     False),
    ("tasks/rows negative", set_value("tasks/rows", (1,), -5),
     "records -5 rows (must be >= 0)", True),
    ("tasks/rows 1e9", set_value("tasks/rows", (1,), 10**9), "tasks/rows: the tasks record 10000", True),
    ("dt = -1", set_attr("dt", -1.0), "dt: must be a finite number > 0 s, got -1", True),
    ("dt = nan", set_attr("dt", np.nan), "dt: must be a finite number > 0 s, got nan", True),
    ("source = 99", set_value("source", (9,), 99), "source: row 9 has code 99, outside source_names (0–8)",
     False),
    ("source of another task", set_value("source", (0,), 3),
     "source: row 0 has code 3 (multiscale), its task is of ", False),  # the first task: a flame
    ("species_names", set_attr("species_names", SPECIES_SWAPPED),
     "species_names: entry 1 is 'O', species 1 of the embedded mechanism is 'H'", True),
    ("mechanism_sha256", set_attr("mechanism_sha256", "0" * 64),
     "mechanism_sha256: 0000000000000000… does not match the embedded mechanism_yaml", True),
    ("source_names", set_attr("source_names", json.dumps(["free_flame", "autoignition"])),
     "source_names: ['free_flame', 'autoignition'] is not", True),
    ("complete", set_attr("complete", np.False_), "complete: says False, the last run in runs says True",
     True),
    ("sum of Y", set_value("inputs", (11, 2), 0.9), "inputs: row 11: ΣY = ", False),
    ("negative Y", negative_y, "inputs: row 20: Y of H2O = -0.01", False),
    ("T", set_value("inputs", (12, 0), 9000.0),
     "inputs: row 12: T = 9000 K lies outside the mechanism's thermo range 300–3500 K", False),
    ("target T", set_value("targets", (14, 0), -5.0), "targets: row 14: T = -5 K (must be > 0)",
     False),
    ("P", set_value("inputs", (13, 1), 0.0), "inputs: row 13: P = 0 Pa lies outside 1–1e+09 Pa", False),
    ("inputs chunk", corrupt_chunk("inputs"), "inputs: rows 0–", False),
    ("targets chunk", corrupt_chunk("targets"), "targets: rows 0–", False),
]


@pytest.mark.parametrize("case,edit,fragment,cheap", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_every_edit_is_reported_by_check_and_refused_by_train(tiny, train_yaml, tmp_path, case,
                                                               edit, fragment, cheap):
    path = edited(tiny, tmp_path, edit)
    finish_corruption(path)
    full = run_cli("dataset", "check", str(path), "--full")
    assert full.returncode == 1 and full.stdout == "", full.stdout + full.stderr
    lines = full.stderr.splitlines()
    assert all(ln.startswith(f"error: dataset: {path}: ") for ln in lines), full.stderr
    assert any(fragment in ln for ln in lines), full.stderr
    if case.endswith("chunk"):
        assert any("cannot be read" in ln and "the file is damaged" in ln for ln in lines)

    quick = check_dataset(path).problems  # the cheap checks alone (what info and append run)
    assert any(fragment in p for p in quick) == cheap, quick

    out = tmp_path / "m.safetensors"
    trained = run_cli("train", str(path), "-c", str(train_yaml), "-o", str(out), "--device", "cpu",
                      "--threads", "1", "-q")
    assert trained.returncode == 1, trained.stdout + trained.stderr
    assert trained.stdout == ""  # no "model: …" claim
    lines = trained.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: dataset: {path}: "), trained.stderr
    assert fragment in lines[0] and "internal error" not in lines[0]
    assert not out.exists() and not Path(f"{out}.ckpt").exists()


def test_the_rows_of_every_source_are_sound(tiny):
    report = check_dataset(tiny, full=True)
    assert report.problems == [] and report.n_rows > 300
    proc = run_cli("dataset", "check", str(tiny), "--full")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{tiny}: sound: every invariant, all {report.n_rows} rows read"


def test_rows_the_writer_does_write_are_sound(tiny, tmp_path):
    """Cantera gives a 300 K inlet back as 299.99999999999994 K (h2o2's range starts at 300 K),
    and labels a multi-scale draw of 50 % H at 2860 K with 4144 K, beyond the range."""
    def as_written(h5: h5py.File) -> None:
        h5["inputs"][3, 0] = np.nextafter(300.0, 0.0)
        h5["targets"][4, 0] = 4144.1

    assert check_dataset(edited(tiny, tmp_path, as_written), full=True).problems == []


def test_many_bad_rows_are_one_line_with_their_count(tiny, tmp_path):
    def many(h5: h5py.File) -> None:
        h5["inputs"][10:40, 4] = np.nan

    report = check_dataset(edited(tiny, tmp_path, many), full=True, block_rows=16)
    assert report.problems == ["inputs: row 10 holds nan in column O (and 29 more row(s))"]


def test_dataset_info_refuses_a_damaged_file_in_one_line(tiny, tmp_path):
    path = edited(tiny, tmp_path, corrupt_chunk("inputs"))
    finish_corruption(path)
    proc = run_cli("dataset", "info", str(path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: dataset: {path}: inputs: rows 0–")
    assert "filter returned failure" in proc.stderr and "internal error" not in proc.stderr
    nan = edited(tiny, tmp_path, set_value("inputs", (5, 3), np.nan))
    proc = run_cli("dataset", "info", str(nan))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: dataset: {nan}: inputs: row 5 holds nan in column H"


def test_sample_append_refuses_a_damaged_file_and_leaves_it_alone(tiny, tmp_path):
    path = edited(tiny, tmp_path, set_attr("mechanism_sha256", "0" * 64))
    before = path.read_bytes()
    proc = run_cli("sample", "-o", str(path), *TINY, "--append")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: output: {path}: mechanism_sha256: 0000000000000000… does not match the "
        "embedded mechanism_yaml (sha256 "), proc.stderr
    assert path.read_bytes() == before


def test_the_writer_never_writes_a_non_finite_row(tmp_path):
    path = tmp_path / "w.h5"
    writer = DatasetWriter.create(path, load_mechanism("h2o2.yaml"), 1e-6, 1e-10, 1e-20,
                                  REACTOR_NAME)
    writer.start_run({})
    rows = np.full((4, 12), 0.1)
    bad = rows.copy()
    bad[2, 0] = np.inf
    try:
        with pytest.raises(DeepkinError, match=r"task r0/multiscale/0000 .*targets: row 2 holds "
                                               r"inf in column T; refusing to write it"):
            writer.append_task("r0/multiscale/0000", rows, bad, 3, "ok")
        with pytest.raises(DeepkinError, match="source code 99"):
            writer.append_task("r0/multiscale/0000", rows, rows, 99, "ok")
        writer.append_task("r0/multiscale/0000", rows, rows, 3, "ok")
        writer.write_pending()
    finally:
        writer.close()
    with h5py.File(path, "r") as h5:
        assert h5["inputs"].shape[0] == 4 and np.isfinite(h5["targets"][...]).all()


def test_row_counts_are_checked_against_the_run_journal(tmp_path):
    path = tmp_path / "j.h5"
    journal = Journal.for_output(path)
    journal.create({"identity": "test", "run_index": 0, "appending": False})
    writer = DatasetWriter.create(path, load_mechanism("h2o2.yaml"), 1e-6, 1e-10, 1e-20,
                                  REACTOR_NAME)
    writer.start_run({})
    gas_row = np.array([1500.0, 101325.0, *([0.1] * 10)])
    rows = np.tile(gas_row, (40, 1))
    for i in range(2):
        writer.append_task(f"r0/multiscale/{i:04d}", rows, rows, 3, "ok")
    writer.close()
    journal.save(0, "r0/multiscale/0000", rows, rows, 3, "ok")
    journal.save(1, "r0/multiscale/0001", rows[:39], rows[:39], 3, "ok")
    assert journal.row_counts() == {"r0/multiscale/0000": 40, "r0/multiscale/0001": 39}
    proc = run_cli("dataset", "check", str(path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: dataset: {path}: tasks/rows: task "
                                        "r0/multiscale/0001 records 40 rows, its journal part "
                                        "holds 39"]


# -- a training that cannot produce a model fails ---------------------------------------------------
def _train(tiny: Path, config: str, out: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    cfg = out.with_suffix(".yaml")
    cfg.write_text(config)
    return subprocess.run([*DEEPKIN, "train", str(tiny), "-c", str(cfg), "-o", str(out),
                           "--device", "cpu", "--threads", "1", "-q", *extra],
                          capture_output=True, text=True, timeout=300, **kwargs)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", proc.stdout  # no "model: …" claim
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
    return lines[0]


def test_a_diverging_training_stops_naming_the_epoch(tiny, tmp_path):
    out = tmp_path / "div.safetensors"
    line = _one_line(_train(tiny, TRAIN + "learning_rate: 1.0e+30\n", out))
    assert line.startswith("error: training: the ") and " loss of epoch 1 is " in line
    assert line.split(" loss of epoch 1 is ")[1].split(" ")[0] in ("nan", "inf", "-inf")
    assert "no model was written" in line and not out.exists()


def test_without_validation_rows_the_best_training_epoch_is_written(tiny, tmp_path):
    out = tmp_path / "v0.safetensors"
    proc = _train(tiny, TRAIN + "val_fraction: 0\n", out)
    assert proc.returncode == 0, proc.stderr
    assert "best training loss (no validation rows)" in proc.stdout and out.is_file()
    out.unlink()  # the model is gone; resuming trains no further epoch
    line = _one_line(_train(tiny, TRAIN + "val_fraction: 0\n", out, "--resume"))
    assert line.startswith(f"error: out: {out} does not exist after training")


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_model_that_cannot_be_written_is_one_line(tiny, tmp_path):
    """A file-size limit below the model's size: the write fails for real (EFBIG)."""
    out = tmp_path / "big.safetensors"
    line = _one_line(_train(tiny, TRAIN, out, preexec_fn=_file_size_limit(8192)))
    assert line == f"error: out: cannot write {out} (File too large); make room and rerun the command"
    assert not out.exists()


@pytest.mark.skipif(shutil.which("mount") is None or os.geteuid() != 0,
                    reason="mounting a tmpfs needs root and mount(8)")
def test_a_full_disk_under_the_model_is_one_line(tiny, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = disk / "m.safetensors"
        line = _one_line(_train(tiny, TRAIN, out))
        assert line == (f"error: out: cannot write {out} (No space left on device); make room "
                        "and rerun the command")
        assert not out.exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_check_of_a_file_that_is_not_a_dataset_is_one_line(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = run_cli("dataset", "check", str(path), "--full")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: dataset: {path} is not a readable HDF5 file")
    assert len(proc.stderr.splitlines()) == 1


def test_rows_past_one_short_species_fit_are_the_samplers_own():
    """GRI-3.0's phase range ends at 3000 K (CH3O's fit); the sampler writes rich 20-25 atm
    methane rows past it (Cantera extrapolates that fit): the check takes inputs up to the top
    most fits reach, 3500 K, as for h2o2."""
    import cantera as ct

    from mechanisms.dataset_check import input_thermo_range_k

    gri = ct.Solution("gri30.yaml")
    assert gri.max_temp == 3000.0
    assert input_thermo_range_k(gri) == (300.0, 3500.0)
    assert input_thermo_range_k(ct.Solution("h2o2.yaml")) == (300.0, 3500.0)
