"""``deepkin refine``: the loop that harvests the states a surrogate's own runs visit, labels and
learns them, round after round. Real Cantera, real HDF5 files, the real CLI in subprocesses:

- one round of the tiny h2o2 loop (tests/data/refine-h2: a 0D rollout harvest, 32x32 networks
  trained for 2 epochs), killed once its harvest stage is marked done and run again: it resumes
  without redoing a finished stage, and its rows, models, report, table and plot hold what the
  round did;
- bad config keys and values, and a work folder of another recipe, refused with one line;
- a round's 0D figures with a species read after ignition (OH; h2o2.yaml has no CO or NO, the
  default), judged and tabled, and a work folder committed before those keys existed resumed;
- the shipped ch4-air loop's config reads and keeps its validation cases held out;
- (slow) a round with a real OpenFOAM 1D flame harvested and judged against OpenFOAM's ODE
  chemistry;
- ``evaluate.chemistry``: read, refused with one line, left out of a recipe at its default (an
  older work folder resumes), a library without the in-process backend refused, and (slow) round
  0 of a flame stepped in-process, with no server started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mechanisms.dataset_file import SOURCE_NAMES, dataset_facts, read_dataset
from mechanisms.state import ONE_ATM_PA
from tests.conftest import DEEPKIN, run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "refine-h2"
SHIPPED = ROOT / "kinetics" / "shipped"
STAGES = ("replay", "r0/evaluate", "r1/harvest", "r1/train-main", "r1/train-tail",
          "r1/train-induction", "r1/evaluate")


@pytest.fixture(scope="module")
def start_model(small_dataset, tmp_path_factory) -> Path:
    """The round-0 model: the tiny loop's 32x32 main network, 2 epochs on the session's small
    h2o2 dataset (no near-equilibrium or induction network: round 1 trains those afresh)."""
    out = tmp_path_factory.mktemp("refine-start") / "start.safetensors"
    run_cli("train", str(small_dataset), "-c", str(TINY / "main.yaml"), "-o", str(out),
            "--threads", "1", "-q", check=True)
    return out


@pytest.fixture(scope="module")
def resumed(start_model, tmp_path_factory) -> dict:
    """``deepkin refine`` killed (SIGKILL) once ``round-1/harvest.json`` exists, then the same
    command run to the end; what both runs left."""
    work = tmp_path_factory.mktemp("refine-work") / "work"
    command = [*DEEPKIN, "refine", str(start_model), "-c", str(TINY / "refine.yaml"), "--work",
               str(work)]
    marker = work / "round-1" / "harvest.json"
    started = time.perf_counter()
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    while not marker.is_file() and first.poll() is None and time.perf_counter() - started < 300:
        time.sleep(0.05)
    first.kill()
    first_err = first.communicate()[1]
    first_s = time.perf_counter() - started
    assert marker.is_file(), f"no harvest marker after {first_s:.0f} s:\n{first_err[-3000:]}"
    before = {"marker": marker.read_text(),
              "data_mtime": (work / "round-1" / "data.h5").stat().st_mtime_ns,
              "replay_mtime": (work / "replay.h5").stat().st_mtime_ns}
    started = time.perf_counter()
    second = run_cli(*command[len(DEEPKIN):], timeout=600)
    print(f"refine: killed after {first_s:.1f} s (harvest marked done), resumed run "
          f"{time.perf_counter() - started:.1f} s")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"work": work, "before": before, "second": second, "model": start_model}


def _rounds(work: Path) -> dict:
    return json.loads((work / "rounds.json").read_text())


def test_a_round_harvests_its_own_states_and_learns_them(resumed):
    work = resumed["work"]
    data = _rounds(work)
    assert [r["round"] for r in data["rounds"]] == [0, 1]
    one = data["rounds"][1]
    # the harvest: up to 200 of the rollout's distinct states labelled, 200 rows spread around
    # them, appended to the replay dataset (2,100 rows) in round 1's own file
    added = one["harvest"]["rows_added"]
    assert added["perturbed"] == added["equilibrium"] == 100
    assert 0 < added["solver_states"] <= 200
    replay = dataset_facts(work / "replay.h5")
    facts = dataset_facts(work / "round-1" / "data.h5")
    assert replay.n_rows == 2100 and facts.n_rows == 2100 + sum(added.values())
    assert len(facts.runs) == 2
    inputs, targets, source = read_dataset(work / "round-1" / "data.h5")
    solver = inputs[np.array(SOURCE_NAMES)[source] == "solver_states"]
    # only the harvest grid's states (2 atm); the validation condition (1 atm) is never learnt
    np.testing.assert_allclose(solver[:, 1], 2 * ONE_ATM_PA)
    assert np.isfinite(targets).all() and solver[:, 0].min() >= 500.0
    # fine-tuned from round 0's model (its main network, its scales); the regime networks it
    # lacks trained afresh; the round's model is the last network's file
    train = one["train"]
    assert list(train) == ["main", "tail", "induction"]
    assert train["main"]["init_from"] == "round-0/model.safetensors"
    assert train["tail"]["init_from"] is None and train["induction"]["init_from"] is None
    # train.overrides (epochs 2) for every network, network_overrides (tail: epochs 1) on top
    assert {n: t["epochs_run"] for n, t in train.items()} == {"main": 2, "tail": 1, "induction": 2}
    assert all(np.isfinite(t["best_val_loss"]) for t in train.values())
    from kinetics.model.model_file import read_model_file

    meta = read_model_file(work / "round-1" / "model.safetensors")[0]
    assert meta.tail is not None and meta.induction is not None
    # the best round by the harvest cases alone, copied to best.safetensors
    scores = {r["round"]: r["score"] for r in data["rounds"]}
    assert data["best_round"] == min(scores, key=lambda k: (scores[k], k))
    best = data["rounds"][data["best_round"]]
    assert (work / "best.safetensors").read_bytes() == (work / best["model"]).read_bytes()
    assert "validation cases are not used" in data["criterion"]
    # the cached 0D reference is Cantera's solution validate compares with
    # (a grid is rolled out in parts, one per T0 and P: here one, 1200 K and 1 atm)
    report = json.loads((work / "round-0" / "evaluate" / "validation-zero-d" / "1200K-1atm" /
                         "report.json").read_text())
    condition = data["rounds"][0]["evaluation"]["validation"]["zero_d"]["conditions"][0]
    assert condition["cantera_t_end_k"] == pytest.approx(
        report["conditions"][0]["final_t_cantera_k"], abs=1e-6)
    assert condition["t_end_k"] == report["conditions"][0]["final_t_surrogate_k"]
    assert len(list((work / "references" / "zero-d").glob("*.json"))) == 3  # 2 harvest, 1 val.


def test_zero_d_grid_parts_side_by_side_equal_one_after_the_other(start_model, tmp_path):
    """A grid rolled out in its (T0, P) parts by two processes gives the figures one process
    gives, each part to its own end time, and one states file holding every part's states."""
    from mechanisms.states_file import read_states
    from refinement.cases import run_zero_d
    from refinement.config import ZeroDSet

    grid = ZeroDSet(temperature_k=(1100.0, 1300.0), pressure_atm=(2.0,), phi=(1.0,), steps=300,
                    ignition_search_s=0.05)
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        results[workers] = run_zero_d(start_model, "H2:1", "O2:1,N2:3.76", grid, out,
                                      out / "states.h5", progress=False, workers=workers)
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["1100K-2atm",
                                                                        "1300K-2atm"]
    one, two = results[1], results[2]
    assert [(c["temperature_k"], c["t_end_k"], c["idt_s"], c["end_time_s"])
            for c in one["conditions"]] == [(c["temperature_k"], c["t_end_k"], c["idt_s"],
                                             c["end_time_s"]) for c in two["conditions"]]
    ends = [c["end_time_s"] for c in two["conditions"]]
    assert ends[0] >= ends[1] > 0 and two["end_time_s"] == max(ends)
    states = read_states(tmp_path / "w2" / "states.h5")[0]
    parts = [read_states(tmp_path / "w2" / f"{p}.states.h5")[0]
             for p in ("1100K-2atm", "1300K-2atm")]
    assert len(states) == sum(len(p) for p in parts) > 0
    assert set(np.round(states[:, 0][:1], 6)) == {1100.0}  # the parts in grid order


@pytest.mark.slow
def test_zero_d_rollouts_on_the_aot_step_equal_torchscript(start_model, tmp_path, monkeypatch):
    """``evaluate.small_calls: aot``: the parts (two processes) step on the AOTInductor package,
    compiled once into the cache before they start, and give the TorchScript rollouts' figures
    (T within 1e-6 K after 300 steps). ~1-2 min: the compile."""
    from refinement.cases import run_zero_d
    from refinement.config import ZeroDSet

    monkeypatch.setenv("DEEPKIN_CACHE_DIR", str(tmp_path / "cache"))
    grid = ZeroDSet(temperature_k=(1100.0, 1300.0), pressure_atm=(2.0,), phi=(1.0,), steps=300,
                    ignition_search_s=0.05)
    results = {mode: run_zero_d(start_model, "H2:1", "O2:1,N2:3.76", grid, tmp_path / mode, None,
                                progress=False, workers=2, small_calls=mode)
               for mode in ("torchscript", "aot")}
    assert len(list((tmp_path / "cache" / "aot").glob("*.pt2"))) == 1  # compiled once
    for a, b in zip(results["aot"]["conditions"], results["torchscript"]["conditions"]):
        assert abs(a["t_end_k"] - b["t_end_k"]) <= 1e-6 and a["idt_s"] == pytest.approx(b["idt_s"])


def test_killed_run_resumes_without_redoing_finished_stages(resumed):
    work, before = resumed["work"], resumed["before"]
    assert (work / "round-1" / "harvest.json").read_text() == before["marker"]
    assert (work / "round-1" / "data.h5").stat().st_mtime_ns == before["data_mtime"]
    assert (work / "replay.h5").stat().st_mtime_ns == before["replay_mtime"]
    log = (work / "progress.log").read_text()
    for stage in ("replay", "r0/evaluate", "r1/harvest"):
        assert log.count(f"{stage}: started") == 1, stage  # once, by the killed run
        assert f"{stage}: done already" in log
    for stage in STAGES:
        assert (work / "progress.log").read_text().count(f"{stage}: finished") == 1, stage
    # every stage marked done, each computed from the stamps of the stages before it
    harvest = json.loads((work / "round-1" / "harvest.json").read_text())
    main = json.loads((work / "round-1" / "train-main.json").read_text())
    assert main["after"]["r1/harvest"] == harvest["stamp"]
    # a second run of a finished loop computes nothing
    again = run_cli("refine", str(resumed["model"]), "-c", str(TINY / "refine.yaml"), "--work",
                    str(work), "-q", timeout=300)
    assert again.returncode == 0, again.stderr
    log = (work / "progress.log").read_text()
    assert all(log.count(f"{stage}: finished") == 1 for stage in STAGES)
    assert "best: round" in again.stdout and "rounds.md" in again.stdout


def test_round_table_and_plot(resumed):
    work = resumed["work"]
    data = _rounds(work)
    table = (work / "rounds.md").read_text()
    assert table.startswith("# Refinement of `refine-h2`")
    for r in data["rounds"]:
        end_t = r["summary"]["validation"]["end_t_error_k"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {r['round']} | "))
        assert f"{end_t:+.1f} K" in row and f"{r['score']:.3g}" in row
    added = sum(data["rounds"][1]["harvest"]["rows_added"].values())
    assert f"| 1 | {added} | main " in table  # rows added and the networks' losses
    assert "## 0D rollouts" in table and "1100 K, 2 atm, phi 0.8" in table
    assert "## Flames" not in table  # no flame in this loop
    png = (work / "rounds.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    import matplotlib.image

    height, width = matplotlib.image.imread(work / "rounds.png").shape[:2]
    assert width > height > 200
    stages = set(data["rounds"][1]["seconds"])
    assert stages == {"harvest", "train-main", "train-tail", "train-induction", "evaluate"}
    seconds = {k: round(v, 1) for k, v in data["rounds"][1]["seconds"].items()}
    print(f"tiny h2 round, seconds per stage: {seconds}")


def test_rounds_flag_overrides_the_config(resumed, tmp_path):
    """``--rounds N`` takes the place of the config's ``rounds`` (which is not part of the
    recipe): a finished one-round folder with a config asking for 3 rounds computes nothing more
    under ``--rounds 1``; ``--rounds 0`` is refused in one line."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(resumed["work"], work)
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["rounds"] = 3
    path = _tiny_copy(tmp_path, config)
    proc = run_cli("refine", str(resumed["model"]), "-c", str(path), "--work", str(work),
                   "--rounds", "1", "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the targets are not met after 1 round(s)" in proc.stdout
    assert [r["round"] for r in _rounds(work)["rounds"]] == [0, 1]
    assert not (work / "round-2").exists()
    bad = run_cli("refine", str(resumed["model"]), "-c", str(path), "--work", str(work),
                  "--rounds", "0", timeout=60)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode != 0 and len(lines) == 1 and "rounds: must be" in lines[0], bad.stderr


def test_loop_stops_once_the_validation_targets_hold(resumed, tmp_path):
    """Targets are not part of the recipe: the same work folder judged with targets round 0
    meets stops there, computes nothing and keeps round 0 as the best."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(resumed["work"], work)
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["targets"].update(equilibrium_temperature_k=1e5, ignition_delay_max_rel=1e5,
                             ignition_delay_mean_rel=1e5)
    proc = run_cli("refine", str(resumed["model"]), "-c", str(_tiny_copy(tmp_path, config)),
                   "--work", str(work), "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "round 0 meets the targets" in proc.stdout
    data = _rounds(work)
    assert [r["round"] for r in data["rounds"]] == [0] and data["best_round"] == 0
    assert data["rounds"][0]["targets_met"] is True
    assert (work / "best.safetensors").read_bytes() == \
        (work / "round-0" / "model.safetensors").read_bytes()
    assert "r0/evaluate: done already" in (work / "progress.log").read_text()
    # the ignition delays are judged too: a tight delay target alone keeps round 0 from stopping
    config["targets"]["ignition_delay_max_rel"] = 1e-9
    proc = run_cli("refine", str(resumed["model"]), "-c", str(_tiny_copy(tmp_path, config)),
                   "--work", str(work), "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = _rounds(work)
    assert [r["targets_met"] for r in data["rounds"]] == [False, False]
    assert "the targets are not met after 1 round(s)" in proc.stdout
    assert "IDT max / mean" in (work / "rounds.md").read_text()


def test_work_folder_of_another_recipe_is_refused(resumed, tmp_path):
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["retrain"] = True
    changed = _tiny_copy(tmp_path, config)
    proc = run_cli("refine", str(resumed["model"]), "-c", str(changed), "--work",
                   str(resumed["work"]), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: work: {resumed['work']} holds a run of another recipe (retrain differs from its "
        "recipe.json); use another --work, or delete that folder to start again"]


def test_a_replaced_starting_model_is_named_and_the_folders_own_goes_on(resumed, tmp_path):
    """A work folder started from a model whose file has since changed (a shipped model
    replaced by a newer one) is refused with a hint: its own starting model, kept as
    round-0/model.safetensors, goes on with it and recomputes nothing."""
    import shutil

    from tests.helpers.models import rewrite_model_file

    work = tmp_path / "work"
    shutil.copytree(resumed["work"], work)
    newer = rewrite_model_file(resumed["model"], tmp_path / "newer.safetensors",
                               meta_edit=lambda raw: raw.update(description="a newer model"))
    proc = run_cli("refine", str(newer), "-c", str(TINY / "refine.yaml"), "--work", str(work),
                   timeout=120)
    start = work / "round-0" / "model.safetensors"
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: work: {work} holds a run of another recipe (model_sha256 differs from its "
        "recipe.json); use another --work, or delete that folder to start again; to go on with "
        f"its own starting model (a shipped model since replaced), pass {start} as MODEL"]
    again = run_cli("refine", str(start), "-c", str(TINY / "refine.yaml"), "--work", str(work),
                    "-q", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "r1/evaluate: done already" in (work / "progress.log").read_text()


def test_a_replay_dataset_sampled_by_hand_is_kept(resumed, tmp_path):
    """A fresh replay stage keeps a DIR/replay.h5 holding exactly the recipes' finished runs (one
    sampled beside round 0), and samples again anything else."""
    from refinement.stages import _holds_recipes

    replay = tmp_path / "replay.h5"
    replay.write_bytes((resumed["work"] / "replay.h5").read_bytes())
    assert _holds_recipes(replay, [TINY / "replay.yaml"])
    assert _holds_recipes(replay, [TINY / "replay.yaml", TINY / "harvest.yaml"])  # 1 of 2 done
    assert not _holds_recipes(replay, [TINY / "harvest.yaml"])  # another recipe's run
    assert not _holds_recipes(replay, [])
    (tmp_path / "replay.h5.journal").write_text("{}")  # a run still being written
    assert not _holds_recipes(replay, [TINY / "replay.yaml"])


def test_recipe_written_before_a_setting_existed_still_resumes(tmp_path):
    """A work folder from an older deepkin lacks keys added since at their empty default: the run
    resumes (same stage digest); a key that carries a value is still a different recipe."""
    from mechanisms.errors import InputError
    from refinement.workdir import WorkDir

    old = {"name": "x", "train": {"overrides": {"epochs": 2}}}
    first = WorkDir(tmp_path / "w")
    first.commit(old)
    again = WorkDir(tmp_path / "w")
    again.commit({"name": "x", "train": {"overrides": {"epochs": 2}, "network_overrides": {}},
                  "zero_d_workers": None})
    assert again.recipe_digest == first.recipe_digest
    with pytest.raises(InputError, match=r"train\.network_overrides differs"):
        WorkDir(tmp_path / "w").commit(
            {"name": "x", "train": {"overrides": {"epochs": 2}, "network_overrides": {"a": 1}}})


BAD_CONFIGS = [
    (lambda c: c.update(roundz=2), "error: roundz: unknown refine setting (did you mean 'rounds'?)"),
    (lambda c: c["harvest"]["zero_d"].update(stepz=10),
     "error: harvest.zero_d.stepz: unknown key (did you mean 'steps'?)"),
    (lambda c: c["train"]["overrides"].update(epochz=1),
     "error: train.overrides.epochz: unknown training setting (did you mean 'epochs'?)"),
    (lambda c: c["train"]["overrides"].update(init_from="x.safetensors"),
     "error: train.overrides.init_from: set by the loop"),
    (lambda c: c["targets"].update(peak_temperature_k=0),
     "error: targets.peak_temperature_k: must be a number > 0, got 0"),
    (lambda c: c["harvest"].update(flames=[{"kind": "flame2d", "end_time_s": 1e-3}]),
     "error: harvest.flames[0].kind: must be one of flame1d, counterflow, got 'flame2d'"),
    (lambda c: c["harvest"].update(zero_d=dict(c["validation"]["zero_d"])),
     "error: harvest.zero_d: the condition T0 1200 K, 1 atm, phi 1 is also a validation"),
    (lambda c: c["harvest"].update(recipe="nowhere.yaml"),
     "error: harvest.recipe: file '"),
    (lambda c: c.update(rounds=0), "error: rounds: must be a whole number >= 1, got 0"),
    (lambda c: c["train"].update(network_overrides={"induction": {"learning_rat": 1e-5}}),
     "error: train.network_overrides.induction.learning_rat: unknown training setting (did you "
     "mean 'learning_rate'?)"),
    (lambda c: c["train"].update(network_overrides={"inductoin": {"epochs": 1}}),
     "error: train.network_overrides.inductoin: unknown network (did you mean 'induction'?)"),
    (lambda c: c["train"].update(network_overrides={"tail": {"init_from": "x.safetensors"}}),
     "error: train.network_overrides.tail.init_from: set by the loop"),
    (lambda c: c.update(references={"workers": 0}),
     "error: references.workers: must be a whole number >= 1, got 0"),
    (lambda c: c.update(references={"worker": 2}),
     "error: references.worker: unknown key (did you mean 'workers'?)"),
    (lambda c: c.update(references={"folder": 5}),
     "error: references.folder: must be a folder path, got 5"),
    (lambda c: c.update(references={"folder": "refine.yaml"}),
     "error: references.folder: "),  # a file, not a folder
    (lambda c: c["validation"]["zero_d"].update(after_ignition_s=0),
     "error: validation.zero_d.after_ignition_s: must be a number > 0, got 0"),
    (lambda c: c["harvest"]["zero_d"].update(after_ignition_s=2),
     "error: harvest.zero_d.after_ignition_s: must be in (0, 1] s, got 2"),
    (lambda c: c["validation"]["zero_d"].update(after_ignition_species="CO"),
     "error: validation.zero_d.after_ignition_species: must be a list of species names such as "
     "[CO, NO] ([] for none), got 'CO'"),
    (lambda c: c["targets"].update(after_ignition_rel=-0.1),
     "error: targets.after_ignition_rel: must be a number > 0, got -0.1"),
]


def _tiny_copy(folder: Path, config: dict) -> Path:
    """The tiny loop's recipes copied into ``folder`` beside ``config`` written as YAML."""
    for name in ("replay.yaml", "harvest.yaml", "main.yaml", "tail.yaml", "induction.yaml"):
        (folder / name).write_text((TINY / name).read_text())
    path = folder / "refine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("edit,line", BAD_CONFIGS, ids=[b[1][7:40] for b in BAD_CONFIGS])
def test_bad_config_is_refused_with_one_line(tmp_path, edit, line):
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    edit(config)
    path = _tiny_copy(tmp_path, config)
    proc = run_cli("refine", "h2-air", "-c", str(path), "--work", str(tmp_path / "work"),
                   timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(line), proc.stderr
    assert not (tmp_path / "work").exists()  # refused before any work


def test_references_folder_is_shared_between_work_folders(tmp_path):
    """``references.folder`` (relative to the config, ``~`` expanded) holds the ODE references
    instead of DIR/references, so that a changed recipe reuses them."""
    from refinement.config import load_refine_config
    from refinement.workdir import WorkDir

    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["references"] = {"folder": "shared-refs", "workers": 2}
    loaded = load_refine_config(_tiny_copy(tmp_path, config))
    assert loaded.reference_folder == tmp_path / "shared-refs" and loaded.reference_workers == 2
    assert "reference_folder" not in json.dumps(loaded.recipe())  # not part of the recipe
    assert WorkDir(tmp_path / "a", references=loaded.reference_folder).references == \
        WorkDir(tmp_path / "b", references=loaded.reference_folder).references == \
        (tmp_path / "shared-refs").resolve()
    assert WorkDir(tmp_path / "c").references == (tmp_path / "c" / "references").resolve()


def test_default_work_folder_is_in_the_user_cache(monkeypatch, tmp_path):
    from refinement.config import default_work_dir

    monkeypatch.delenv("DEEPKIN_CACHE_DIR", raising=False)
    assert default_work_dir("ch4-air") == Path.home() / ".cache" / "deepkin" / "refine" / "ch4-air"
    monkeypatch.setenv("DEEPKIN_CACHE_DIR", str(tmp_path))
    assert default_work_dir("x") == tmp_path / "refine" / "x"


def test_shipped_ch4_air_loop_keeps_its_validation_cases_held_out():
    from refinement.config import load_refine_config

    config = load_refine_config(SHIPPED / "ch4-air.refine.yaml")
    validation = {(f.phi, f.pressure_atm) for f in config.validation.flames}
    assert validation == {(0.7, 1.0), (1.0, 1.0), (1.3, 1.0)}
    harvest = {(f.phi, f.pressure_atm) for f in config.harvest.flames}
    assert harvest == {(0.85, 1.0), (1.15, 1.0), (1.0, 2.0), (1.45, 1.0), (0.6, 1.0), (1.25, 1.0),
                       (1.3, 2.0)}
    assert not harvest & validation
    grid = set(config.validation.zero_d.conditions())
    assert len(grid) == 36 and {c[0] for c in grid} == {1000, 1200, 1400, 1600}
    assert not grid & set(config.harvest.zero_d.conditions())
    t = config.targets
    assert (t.flame_speed_rel, t.peak_temperature_k, t.equilibrium_temperature_k) == (0.03, 10, 10)
    assert (t.ignition_delay_max_rel, t.ignition_delay_mean_rel) == (0.10, 0.03)
    assert list(config.train.paths()) == ["main", "tail", "induction"]
    assert config.train.network_overrides == {"tail": {"output_weights": {"NO": 30.0}}}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_round_with_an_openfoam_flame(tmp_path):
    """The shipped h2-air-flame fine-tuned for one round on the tiny loop's rows plus the
    states of its own OpenFOAM flame at phi 0.7 (0.2 ms, 400 cells), judged on the phi 1 flame
    against the same cases on OpenFOAM's ODE chemistry (computed once, cached); the server the
    loop starts is gone when it ends."""
    from tests.helpers.openfoam import build_library, require_openfoam

    require_openfoam()
    build_library()
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["harvest"]["flames"] = [{"kind": "flame1d", "phi": 0.7, "end_time_s": 2e-4}]
    config["validation"]["flames"] = [{"kind": "flame1d", "phi": 1.0, "end_time_s": 2e-4}]
    del config["validation"]["zero_d"]
    config["replay"]["recipes"] = [str(TINY / "replay.yaml")]
    config["harvest"]["recipe"] = str(TINY / "harvest.yaml")
    config["train"] = {n: str(SHIPPED / f"h2-air-flame.{n if n != 'main' else 'train'}.yaml")
                       for n in ("main", "tail", "induction")}
    config["train"].update(overrides={"epochs": 1, "learning_rate": 1e-4}, threads=1)
    # targets no model meets, so that round 0 does not stop the loop
    config["targets"] = {"flame_speed_rel": 1e-5, "peak_temperature_k": 1e-3}
    config["references"] = {"workers": 2}  # the two ODE references side by side
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    proc = run_cli("refine", "h2-air-flame", "-c", str(path), "--work", str(work), timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _rounds(work)
    for r in data["rounds"]:
        for which, label in (("harvest", "flame1d-phi0.7-1atm-300K"),
                             ("validation", "flame1d-phi1-1atm-300K")):
            flame = r["evaluation"][which]["flames"][0]
            assert flame["case"] == label and "failed" not in flame
            assert flame["ode_speed_m_s"] > 0.3 and abs(flame["speed_rel"]) < 0.5
            assert flame["heat_release_ratio"] and flame["served"] > 0.9
            print(f"round {r['round']} {which} {label}: speed {flame['speed_m_s']:.4f} vs ODE "
                  f"{flame['ode_speed_m_s']:.4f} m/s ({100 * flame['speed_rel']:+.2f} %), peak T "
                  f"{flame['peak_error_k']:+.1f} K, heat release by band "
                  f"{ {b: round(x, 2) for b, x in flame['heat_release_ratio'].items()} }")
    states = work / "round-0" / "states" / "flame1d-phi0.7-1atm-300K.states.h5"
    assert states.is_file()
    assert data["rounds"][1]["harvest"]["rows_added"]["solver_states"] > 0
    # the ODE runs are references: one per case, reused by round 1
    assert len(list((work / "references" / "openfoam").iterdir())) == 2
    log = (work / "progress.log").read_text()
    assert "references: 2 ODE flame(s) to compute, 2 at a time" in log
    assert log.count("references: flame1d-phi") == 2  # each one's time, once (round 1 reuses)
    assert log.count("serving refine-r") == 2
    port = re.findall(r"serving refine-r1.safetensors at http://127.0.0.1:(\d+)", log)[-1]
    import socket

    with socket.socket() as sock:  # the round's server stopped with its stage
        assert sock.connect_ex(("127.0.0.1", int(port))) != 0
    assert "## Flames" in (work / "rounds.md").read_text()
    print(proc.stderr.splitlines()[-1] if proc.stderr else "", file=sys.stderr)


def _loose_targets() -> dict[str, float]:
    """Targets every round meets: the loop stops after round 0's evaluate (no replay, no
    training)."""
    return {k: 1e5 for k in ("flame_speed_rel", "peak_temperature_k", "equilibrium_temperature_k",
                             "ignition_delay_max_rel", "ignition_delay_mean_rel",
                             "after_ignition_rel")}


def test_zero_d_figures_hold_a_species_after_ignition(tmp_path):
    """The shipped h2-air-flame (h2o2.yaml, dt 1 µs) judged on the tiny loop's grids, the
    validation grid tracking OH 0.1 ms after ignition: round 0's figures hold the
    surrogate's and Cantera's mass fractions (Cantera's those of validate's own report) and
    their error, the worst per species, the figure over its target among the judged errors, and
    the round table shows it. The harvest grid leaves the species at their default: CO and NO,
    which h2o2.yaml lacks, so none is tracked there."""
    from refinement.cases import normalised_errors
    from refinement.config import Targets

    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["validation"]["zero_d"].update(after_ignition_species=["OH"], after_ignition_s=1e-4)
    config["targets"] = _loose_targets()
    work = tmp_path / "work"
    started = time.perf_counter()
    proc = run_cli("refine", "h2-air-flame", "-c", str(_tiny_copy(tmp_path, config)), "--work",
                   str(work), "-q", timeout=300)
    print(f"round 0 evaluate with OH after ignition: {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 0 meets the targets" in proc.stdout
    data = _rounds(work)
    zero_d = data["rounds"][0]["evaluation"]["validation"]["zero_d"]
    assert zero_d["after_ignition_species"] == ["OH"] and zero_d["after_ignition_s"] == 1e-4
    row = zero_d["conditions"][0]
    oh = row["after_ignition"]["OH"]
    report = json.loads((work / "round-0" / "evaluate" / "validation-zero-d" / "1200K-1atm" /
                         "report.json").read_text())
    cantera, ours, rel = report["conditions"][0]["after_ignition"]["OH"]
    assert report["after_ignition_s"] == 1e-4
    assert oh["cantera_y"] == cantera > 1e-4  # OH of the burning mixture
    assert oh["y"] == ours > 0 and oh["rel"] == rel < 0.5  # the surrogate ignited too
    assert zero_d["after_ignition_max_rel"] == {"OH": oh["rel"]}
    # h2o2.yaml has no CO or NO: the harvest grid's default tracks nothing
    harvest = data["rounds"][0]["evaluation"]["harvest"]["zero_d"]
    assert harvest["after_ignition_species"] == [] and harvest["after_ignition_max_rel"] == {}
    assert all(r["after_ignition"] == {} for r in harvest["conditions"])
    # judged: the error over its target, so a tight target alone would keep the loop going
    name = f"0D {row['label']} OH after ignition"
    figures = data["rounds"][0]["evaluation"]["validation"]
    assert normalised_errors(figures, Targets())[name] == pytest.approx(oh["rel"] / 0.10)
    assert normalised_errors(figures, Targets(after_ignition_rel=1e-9))[name] > 1.0
    assert not any("after ignition" in k
                   for k in normalised_errors(data["rounds"][0]["evaluation"]["harvest"],
                                              Targets()))
    summary = data["rounds"][0]["summary"]
    assert summary["validation"]["after_ignition_max_rel"] == {"OH": oh["rel"]}
    assert summary["harvest"]["after_ignition_rel"] is None
    table = (work / "rounds.md").read_text()
    assert "0D OH 0.1 ms after ignition within 1e+07 %" in table
    assert "species after ignition (worst)" in table
    line = next(x for x in table.splitlines() if x.startswith("| 0 | 0 | "))
    assert f"| OH {100 * oh['rel']:.1f} % |" in line
    assert f"OH {oh['y']:.3e} / {oh['cantera_y']:.3e}" in table


def test_after_ignition_keys_resume_a_recipe_written_before_them(tmp_path):
    """A work folder committed before the 0D grids had after_ignition_s and
    after_ignition_species resumes (same stage digest) with both at their defaults, and with
    the species turned off; another delay or species is another recipe."""
    from mechanisms.errors import InputError
    from refinement.config import load_refine_config
    from refinement.workdir import WorkDir

    def recipe(**zero_d) -> dict:
        config = yaml.safe_load((TINY / "refine.yaml").read_text())
        config["validation"]["zero_d"].update(zero_d)
        return load_refine_config(_tiny_copy(tmp_path, config)).recipe()

    new = recipe()
    assert new["validation"]["zero_d"]["after_ignition_species"] is None
    old = json.loads(json.dumps(new))
    for name in ("harvest", "validation"):
        assert "after_ignition_s" not in old[name]["zero_d"]  # left out at its default
        del old[name]["zero_d"]["after_ignition_species"]
    first = WorkDir(tmp_path / "w")
    first.commit(old)
    for same in (new, recipe(after_ignition_s=0.01), recipe(after_ignition_species=[])):
        again = WorkDir(tmp_path / "w")
        again.commit(same)
        assert again.recipe_digest == first.recipe_digest
    for key, value in (("after_ignition_s", 0.02), ("after_ignition_species", ["OH"])):
        with pytest.raises(InputError, match=rf"validation\.zero_d\.{key} differs"):
            WorkDir(tmp_path / "w").commit(recipe(**{key: value}))


def test_a_species_the_model_lacks_is_refused_before_any_work(tmp_path):
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["harvest"]["zero_d"]["after_ignition_species"] = ["OH", "CO"]
    proc = run_cli("refine", "h2-air-flame", "-c", str(_tiny_copy(tmp_path, config)), "--work",
                   str(tmp_path / "work"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: harvest.zero_d.after_ignition_species: CO is not one of the model's species"]
    assert not (tmp_path / "work").exists()


@pytest.fixture
def one_torch_thread():
    """This process's torch on one thread for the test (two threads on a shared 2-core machine
    step a one-cell batch ~20 times slower), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_cached_rollout_of_other_after_ignition_species_is_rolled_out_again(tmp_path,
                                                                              one_torch_thread):
    """A 0D part cached without the species now asked for (e.g. by a loop that tracked none)
    is computed again rather than read: the shipped h2-air-flame's OH 50 µs after ignition
    against Cantera's."""
    import dataclasses

    from kinetics.model.registry import resolve_model
    from refinement.cases import run_zero_d
    from refinement.config import ZeroDSet

    model = resolve_model("h2-air-flame")
    grid = ZeroDSet(temperature_k=(1300.0,), pressure_atm=(2.0,), phi=(1.0,), steps=200,
                    ignition_search_s=0.002, after_ignition_species=())
    out = tmp_path / "zero-d"
    none = run_zero_d(model, "H2:1", "O2:1,N2:3.76", grid, out, None, progress=False)
    assert none["conditions"][0]["after_ignition"] == {}
    asked = dataclasses.replace(grid, after_ignition_species=("OH",), after_ignition_s=5e-5)
    oh = run_zero_d(model, "H2:1", "O2:1,N2:3.76", asked, out, None, progress=False)
    assert oh["after_ignition"] == {"species": ["OH"], "delay_s": 5e-5, "tracked": ["OH"]}
    cantera, ours, rel = oh["conditions"][0]["after_ignition"]["OH"]
    assert cantera > 0 and ours > 0 and rel == pytest.approx(abs(ours - cantera) / cantera)
    part = json.loads((out / "1300K-2atm" / "result.json").read_text())
    assert part["after_ignition"]["tracked"] == ["OH"]
    # asked again: read from the cache
    assert run_zero_d(model, "H2:1", "O2:1,N2:3.76", asked, out, None, progress=False) == oh


# -- one run per work folder, and `deepkin refine-status` ---------------------------------------
HOLD_LOCK = """
import json, sys, time
from refinement.workdir import WorkDir
with WorkDir(sys.argv[1]).hold(json.loads(sys.argv[2])):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def lock_holder():
    """``start(work, about)``: a subprocess holding ``work``'s run.lock (``WorkDir.hold``) until
    it is killed; every one started is killed after the test."""
    procs: list[subprocess.Popen] = []

    def start(work: Path, about: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(work),
                                 json.dumps(about or {})], stdout=subprocess.PIPE, text=True,
                                cwd=ROOT)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_run_on_a_work_folder_in_use_is_refused(lock_holder, tmp_path):
    """A run that finds the folder's lock held stops with one line naming the holder, before it
    writes anything there (no recipe, no progress.log)."""
    from mechanisms.errors import InputError
    from refinement.workdir import WorkDir

    work = tmp_path / "work"
    holder = lock_holder(work)
    facts = json.loads((work / "run.lock").read_text())
    assert facts["pid"] == holder.pid
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["targets"] = _loose_targets()
    proc = run_cli("refine", "h2-air-flame", "-c", str(_tiny_copy(tmp_path, config)), "--work",
                   str(work), "-q", timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: work: {work.resolve()} is in use by a running deepkin refine (pid {holder.pid}, "
        f"started {facts['started']}); wait for it to finish or stop it"]
    assert sorted(p.name for p in work.iterdir()) == ["run.lock"]
    with pytest.raises(InputError, match=rf"is in use by a running deepkin refine \(pid "
                                         rf"{holder.pid}, "):
        with WorkDir(work).hold():
            pass
    assert holder.poll() is None  # the holder runs on, its lock untouched
    assert WorkDir(work).holder().state == "held"


def test_a_killed_run_leaves_a_lock_file_that_blocks_nothing(lock_holder, tmp_path):
    """SIGKILL gives no chance to clean up: run.lock stays, naming the dead pid, but the kernel
    released its flock, so the next run takes it at once."""
    import signal

    from refinement.workdir import WorkDir

    work = tmp_path / "work"
    holder = lock_holder(work, {"rounds": 2})
    probed = WorkDir(work).holder()
    assert (probed.state, probed.pid, probed.alive, probed.about) == \
        ("held", holder.pid, True, {"rounds": 2})
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (work / "run.lock").is_file()
    stale = WorkDir(work).holder()
    assert (stale.state, stale.pid, stale.alive) == ("free", holder.pid, False)
    started = time.perf_counter()
    with WorkDir(work).hold({"rounds": 3}):
        assert time.perf_counter() - started < 0.5  # no waiting on a free lock
        mine = WorkDir(work).holder()
        assert (mine.state, mine.pid, mine.about) == ("held", os.getpid(), {"rounds": 3})
    assert WorkDir(work).holder().state == "free"


def test_refine_status_of_a_finished_run(resumed):
    """The finished tiny loop: not running (its last run released the lock), both rounds with
    their validation figures and harvest score, as text and as JSON, nothing written."""
    from refinement.status import _evaluate_progress, read_status
    from refinement.workdir import WorkDir

    work = resumed["work"]
    before = sorted((p, p.stat().st_mtime_ns) for p in work.rglob("*"))
    proc = run_cli("refine-status", str(work), timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    print(proc.stdout)
    assert lines[0] == f"work     {work.resolve()} (refine-h2, up to 1 round(s))"
    assert lines[1].startswith("run      not running; the last run ended ")
    assert "best: round" in lines[1]
    data = _rounds(work)
    for r in data["rounds"]:
        line = next(x for x in lines if x.startswith(f"round {r['round']}  "))
        v = r["summary"]["validation"]
        assert f"end T {v['end_t_error_k']:+.1f} K" in line
        assert f"0D IDT max {100 * v['idt_max_rel']:.1f} %" in line
        assert f"harvest score {r['score']:.3g} ({r['worst']})" in line
    assert len(lines) == 2 + len(data["rounds"])  # no stage running, no estimate
    as_json = run_cli("refine-status", str(work), "--json", timeout=60)
    status = json.loads(as_json.stdout)
    assert status["running"] is False and status["lock"]["state"] == "free"
    assert status["lock"]["about"]["rounds"] == 1 and status["current"] is None
    assert [r["round"] for r in status["rounds"]] == [0, 1]
    assert status["rounds"][1]["score"] == pytest.approx(data["rounds"][1]["score"])
    assert set(status["rounds"][1]["seconds"]) == set(data["rounds"][1]["seconds"])
    # the part folders the status counts are the ones the 0D rollouts wrote (one per T0 and P)
    w = WorkDir(work)
    recipe = w.load()
    assert _evaluate_progress(w, recipe, 1) == {"zero_d_parts": 2, "zero_d_parts_done": 2}
    assert read_status(work).ended == status["ended"]
    assert sorted((p, p.stat().st_mtime_ns) for p in work.rglob("*")) == before


def _hand_made_folder(tmp_path: Path) -> tuple[Path, str]:
    """A work folder as a run leaves it in round 2: rounds 0 and 1 evaluated, round 2's harvest
    and main network done; the recipe's two networks (tail: 3 epochs by its override), three
    flames and two 0D grids of two parts each. Its recipe digest."""
    from refinement.workdir import StageRecord, WorkDir

    def flame(phi: float) -> dict:
        return {"kind": "flame1d", "end_time_s": 0.01, "phi": phi}

    recipe = {"name": "hand",
              "harvest": {"flames": [flame(0.85)],
                          "zero_d": {"temperature_k": [1100, 1300], "pressure_atm": [2],
                                     "phi": [1]}},
              "validation": {"flames": [flame(0.7), flame(1.3)],
                             "zero_d": {"temperature_k": [1200], "pressure_atm": [1, 5],
                                        "phi": [1]}},
              "train": {"main": {"file": "main.yaml", "text": "epochs: 40\n"},
                        "tail": {"file": "tail.yaml", "text": "epochs: 40\ntail_of: x\n"},
                        "induction": None, "overrides": {"epochs": 6},
                        "network_overrides": {"tail": {"epochs": 3}}}}
    work = WorkDir(tmp_path / "work")
    work.commit(recipe)
    figures = {"harvest": {"flames": [{"case": "flame1d-phi0.85-1atm-300K", "speed_rel": 0.06,
                                       "peak_error_k": 2.0}]},
               "validation": {"flames": [{"case": "flame1d-phi0.7-1atm-300K",
                                          "speed_rel": -0.031, "peak_error_k": -4.0},
                                         {"case": "flame1d-phi1.3-1atm-300K",
                                          "failed": "OpenFOAM stopped"}]}}
    seconds = {"r0/evaluate": 600.0, "r1/harvest": 120.0, "r1/train-main": 300.0,
               "r1/train-tail": 200.0, "r1/evaluate": 900.0, "r2/harvest": 100.0,
               "r2/train-main": 280.0}
    for stage, s in seconds.items():
        record = StageRecord(stage, "stamp", work.recipe_digest, {}, [],
                             figures if stage.endswith("evaluate") else {}, s,
                             "2026-12-06 10:00:00")
        path = work.marker_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record.__dict__))
    return work.root, work.recipe_digest


def _log(work: Path, now: float, *lines: tuple[float, str]) -> None:
    """Append ``(seconds before now, text)`` lines to progress.log as a run writes them."""
    with open(work / "progress.log", "a") as fh:
        for ago, text in lines:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now - ago))} {text}\n")


def test_refine_status_of_a_running_stage_counts_its_files(lock_holder, tmp_path):
    """A run in round 2 (hand-made files, the lock held by a subprocess): its training stage's
    epochs from the CSV log out of the configured ones, then its evaluate stage's flames and 0D
    parts with a result out of the recipe's, each with an estimate of the round's end from
    round 1's stage times; the run killed, the stage shown as stopped, with no estimate."""
    import signal

    from refinement.status import format_status, read_status

    work, _ = _hand_made_folder(tmp_path)
    targets = {"flame_speed_rel": 0.03, "peak_temperature_k": 10.0}
    holder = lock_holder(work, {"rounds": 3, "targets": targets})
    now = int(time.time())
    _log(work, now, (3000, f"refine m.safetensors (hand): up to 3 round(s) in {work}"),
         (2000, "r2/harvest: started"), (1900, "r2/harvest: finished in 100.0 s"),
         (1900, "r2/train-main: started"), (1620, "r2/train-main: finished in 280.0 s"),
         (1620, "r2/train-tail: started"))
    (work / "round-2" / "model.log.csv").write_text(  # tail: the last network, the model
        "epoch,train_loss,val_loss,learning_rate,seconds\n1,0.9,0.7,0.001,10\n2,0.6,0.5,0.001,20\n")
    _log(work, now, (1500, "killed: nothing more written"), (60, "refine m.safetensors (hand): "
                                                                 f"up to 3 round(s) in {work}"),
         (60, "r2/train-tail: resumed"))
    status = read_status(work, now=now)
    text = format_status(status)
    print(text)
    assert status.running is True and status.lock.pid == holder.pid
    assert [r.round for r in status.rounds] == [0, 1]
    assert status.rounds[1].flame_speed_rel == {"flame1d-phi0.7-1atm-300K": -0.031,
                                                "flame1d-phi1.3-1atm-300K": None}
    assert status.rounds[1].targets_met is False and status.rounds[1].worst == \
        "flame1d-phi0.85-1atm-300K flame speed" and status.rounds[1].score == pytest.approx(2.0)
    c = status.current
    assert (c.stage, c.resumed, c.elapsed_s) == ("r2/train-tail", True, 60)
    assert c.progress == {"epochs": 3, "epochs_done": 2, "best_val_loss": 0.5}
    e = status.estimate
    assert (e.round, e.from_round, e.left_out) == (2, 1, [])
    assert e.remaining_s == pytest.approx(200 - 60 + 900)
    lines = text.splitlines()
    assert lines[1] == f"run      running (pid {holder.pid}, started {status.lock.started})"
    assert lines[2].startswith("round 0  (evaluated 2026-12-06 10:00:00) validation flame speed "
                               "phi0.7 -3.10 %, phi1.3 failed; peak T -4.0 K; harvest score 2 "
                               "(flame1d-phi0.85-1atm-300K flame speed); targets missed")
    assert lines[4].startswith("now      r2/train-tail (resumed ") and \
        lines[4].endswith(", 60 s ago): epoch 2/3 (best val. loss 0.5)")
    assert lines[5] == f"estimate round 2 ends around {e.end} (in 17 min; an estimate from " \
                       "round 1's stage times)"

    # the evaluate stage: 1 of 3 flames and 3 of 4 grid parts have a result
    _log(work, now, (30, "r2/train-tail: finished in 30.0 s"), (30, "r2/evaluate: started"),
         (20, "r2/evaluate: running flame1d-phi0.7-1atm-300K"))
    evaluate = work / "round-2" / "evaluate"
    for part in ("harvest/flame1d-phi0.85-1atm-300K", "harvest-zero-d/1100K-2atm",
                 "harvest-zero-d/1300K-2atm", "validation-zero-d/1200K-5atm",
                 "validation/flame1d-phi0.7-1atm-300K/0.001"):
        (evaluate / part).mkdir(parents=True)
        if not part.endswith("0.001"):  # a flame still running has no result yet
            (evaluate / part / "result.json").write_text("{}")
    proc = run_cli("refine-status", str(work), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["running"] is True and data["current"]["stage"] == "r2/evaluate"
    assert data["current"]["progress"] == {"flames": 3, "flames_done": 1, "zero_d_parts": 4,
                                           "zero_d_parts_done": 3}
    assert data["current"]["last_line"] == "r2/evaluate: running flame1d-phi0.7-1atm-300K"
    assert 900 - 30 - 60 < data["estimate"]["remaining_s"] <= 900 - 30
    text = run_cli("refine-status", str(work), timeout=60).stdout
    print(text)
    assert ": flames 1/3 done, 0D parts 3/4 done" in text
    assert "last logged " in text and ": r2/evaluate: running flame1d-phi0.7-1atm-300K" in text

    # the run killed mid-stage: not running, the stage it stopped in, no estimate
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    status = read_status(work, now=now)
    assert status.running is False and status.estimate is None
    assert status.current.stage == "r2/evaluate"
    lines = format_status(status).splitlines()
    assert lines[1] == ("run      not running: stopped before its stage finished (killed or "
                        "failed); the same deepkin refine command resumes it")
    assert lines[4].startswith("stopped  r2/evaluate (started ")


def test_refine_status_counts_the_ode_references_while_they_run(tmp_path):
    """Before an evaluate stage's flames, its ODE references (hours of CPU the first time): how
    many of the recipe's flames have one, and how far each one begun has got; nothing once all
    are computed. A folder of another case (another pressure) does not count."""
    from refinement.status import _evaluate_progress, _progress_text
    from refinement.workdir import WorkDir

    work, _ = _hand_made_folder(tmp_path)
    w = WorkDir(work)
    recipe = w.load()
    base = work / "references" / "openfoam"
    assert _evaluate_progress(w, recipe, 0) == {"flames": 3, "flames_done": 0,
                                                "zero_d_parts": 4, "zero_d_parts_done": 0}
    done = base / "flame1d-phi0.85-1atm-300K-0123456789abcdef"
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    for when in ("0", "0.002", "0.004"):
        (base / "flame1d-phi0.7-1atm-300K-fedcba9876543210" / when).mkdir(parents=True)
    (base / "flame1d-phi1.3-2atm-300K-0123456789abcdef" / "0.009").mkdir(parents=True)
    progress = _evaluate_progress(w, recipe, 0)
    assert progress["references"] == 3 and progress["references_done"] == 1
    assert progress["references_running"] == [{"case": "flame1d-phi0.7-1atm-300K",
                                               "time_s": 0.004, "end_time_s": 0.01}]
    assert _progress_text(progress) == ("ODE references 1/3 computed (flame1d-phi0.7-1atm-300K "
                                        "4/10 ms), flames 0/3 done, 0D parts 0/4 done")
    for folder in ("flame1d-phi0.7-1atm-300K-fedcba9876543210",
                   "flame1d-phi1.3-1atm-300K-1111111111111111"):
        (base / folder).mkdir(parents=True, exist_ok=True)
        (base / folder / "result.json").write_text("{}")
    assert "references" not in _evaluate_progress(w, recipe, 0)


def test_refine_status_of_a_folder_that_is_no_work_folder(tmp_path):
    """One line, exit 2, and nothing imported that a status does not need (torch)."""
    for folder in (tmp_path, tmp_path / "missing"):
        proc = run_cli("refine-status", str(folder), timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"error: work: {folder.resolve()} is not a refine work folder (no recipe.json)"]
        assert proc.stdout == ""
    work, _ = _hand_made_folder(tmp_path)
    script = ("import sys\nfrom deepkin.cli import cli\n"
              "cli.main(['refine-status', sys.argv[1]], standalone_mode=False)\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    proc = subprocess.run([sys.executable, "-c", script, str(work)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "no torch"
    assert "run      unknown: no run.lock" in proc.stdout  # a run of a deepkin before the lock


def test_status_knows_the_default_epochs_of_a_training_config():
    from kinetics.training.train import TrainConfig
    from refinement.status import TRAIN_EPOCHS_DEFAULT

    assert TRAIN_EPOCHS_DEFAULT == TrainConfig().epochs


# -- evaluate.chemistry: the round's flames through the service or in-process ---------------
def test_evaluate_chemistry_is_read_and_a_bad_value_refused_with_one_line(tmp_path):
    """``evaluate.chemistry`` defaults to the service (``deepkin``) and takes
    ``deepkin-inprocess`` beside ``evaluate.workers``; another value, or a misspelt key, is
    refused with one line naming it, before any work."""
    from refinement.config import load_refine_config

    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    default = load_refine_config(_tiny_copy(tmp_path, config))
    assert default.evaluate_chemistry == "deepkin" and not default.in_process
    assert default.zero_d_small_calls == "torchscript"
    config["evaluate"] = {"chemistry": "deepkin-inprocess", "workers": 2, "small_calls": "aot"}
    chosen = load_refine_config(_tiny_copy(tmp_path, config))
    assert chosen.evaluate_chemistry == "deepkin-inprocess" and chosen.in_process
    assert chosen.zero_d_workers == 2 and chosen.zero_d_small_calls == "aot"
    # a speed setting: the recipe (what the finished stages are judged by) does not hold it
    assert chosen.recipe() == load_refine_config(_tiny_copy(tmp_path, {
        **config, "evaluate": {"chemistry": "deepkin-inprocess", "workers": 2}})).recipe()
    for evaluate, line in (
            ({"chemistry": "ode"}, "error: evaluate.chemistry: must be one of deepkin, "
                                   "deepkin-inprocess, got 'ode'"),
            ({"small_calls": "fast"}, "error: evaluate.small_calls: must be one of torchscript, "
                                      "aot, got 'fast'"),
            ({"chemistri": "deepkin"}, "error: evaluate.chemistri: unknown key (did you mean "
                                       "'chemistry'?)")):
        config["evaluate"] = evaluate
        path = _tiny_copy(tmp_path, config)
        proc = run_cli("refine", "h2-air", "-c", str(path), "--work", str(tmp_path / "work"),
                       timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(line), \
            proc.stderr
        assert not (tmp_path / "work").exists()  # refused before any work


def test_evaluate_chemistry_resumes_a_recipe_written_before_it(tmp_path):
    """A work folder committed before ``evaluate.chemistry`` existed resumes (same stage digest)
    with the key at its default, given or not; ``deepkin-inprocess`` is another recipe (its
    figures are another solver's)."""
    from mechanisms.errors import InputError
    from refinement.config import load_refine_config
    from refinement.workdir import WorkDir

    def recipe(**evaluate) -> dict:
        config = yaml.safe_load((TINY / "refine.yaml").read_text())
        if evaluate:
            config["evaluate"] = evaluate
        return load_refine_config(_tiny_copy(tmp_path, config)).recipe()

    old = recipe()
    assert "evaluate_chemistry" not in old  # left out at its default: what an old folder holds
    first = WorkDir(tmp_path / "w")
    first.commit(old)
    for same in (recipe(chemistry="deepkin"), recipe(chemistry="deepkin", workers=1)):
        again = WorkDir(tmp_path / "w")
        again.commit(same)
        assert again.recipe_digest == first.recipe_digest
    in_process = recipe(chemistry="deepkin-inprocess")
    assert in_process["evaluate_chemistry"] == "deepkin-inprocess"
    with pytest.raises(InputError, match=r"\(evaluate_chemistry differs from its recipe\.json\)"):
        WorkDir(tmp_path / "w").commit(in_process)


def test_in_process_flames_need_the_library_s_in_process_backend(tmp_path, monkeypatch):
    """``evaluate.chemistry: deepkin-inprocess`` with a chemistry library that has no in-process
    backend (a file without ``deepkin_local_open``, standing in for a library built before the
    backend existed) is refused with one line before any work."""
    from couplers.openfoam.build import LIBRARY_NAME
    from tests.helpers.openfoam import require_openfoam

    require_openfoam()
    home = tmp_path / "openfoam"
    (home / "lib").mkdir(parents=True)
    (home / "lib" / LIBRARY_NAME).write_bytes(b"\x7fELF not a library with the backend")
    monkeypatch.setenv("DEEPKIN_OPENFOAM_HOME", str(home))
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["validation"]["flames"] = [{"kind": "flame1d", "phi": 1.0, "end_time_s": 2e-4}]
    config["evaluate"] = {"chemistry": "deepkin-inprocess"}
    proc = run_cli("refine", "h2-air-flame", "-c", str(_tiny_copy(tmp_path, config)), "--work",
                   str(tmp_path / "work"), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: evaluate.chemistry: the deepkin chemistry library "
                               f"{home / 'lib' / LIBRARY_NAME} has no in-process backend")
    assert not (tmp_path / "work").exists()


def _require_in_process_openfoam() -> None:
    """Skip (fail under DEEPKIN_REQUIRE_OPENFOAM) where OpenFOAM or the chemistry library with
    its in-process backend is missing."""
    from couplers.openfoam.build import has_in_process_backend, library_path, library_problem
    from tests.helpers.openfoam import REQUIRED, require_openfoam

    require_openfoam()
    problem = library_problem()
    if problem is None and not has_in_process_backend():
        problem = f"{library_path()} has no in-process backend (built before it existed)"
    if problem:
        (pytest.fail if REQUIRED else pytest.skip)(
            f"the in-process OpenFOAM chemistry is not usable here: {problem}; run `deepkin "
            "openfoam build`")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_round_zero_flame_in_process_starts_no_server(tmp_path):
    """``evaluate.chemistry: deepkin-inprocess``: round 0 of the shipped h2-air-flame on one
    harvest flame (phi 0.7, 0.2 ms, 400 cells) runs with the model exported into the case and
    stepped in reactingFoam's own process: no ``deepkin serve`` (no serve.log, no served copy),
    the figures of a service run (speed, peak T, heat release by band, served share) against the
    ODE reference, the flame's states harvested. Loose targets on the tiny 0D validation
    condition stop the loop after round 0."""
    from couplers.openfoam.export import MODEL_FILE

    _require_in_process_openfoam()
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["harvest"] = {"recipe": str(TINY / "harvest.yaml"), "workers": 0,
                         "flames": [{"kind": "flame1d", "phi": 0.7, "end_time_s": 2e-4}]}
    config["replay"]["recipes"] = [str(TINY / "replay.yaml")]
    config["train"] = {n: str(TINY / f"{n}.yaml") for n in ("main", "tail", "induction")}
    config["targets"] = _loose_targets()
    config["evaluate"] = {"chemistry": "deepkin-inprocess", "workers": 1}
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    started = time.perf_counter()
    proc = run_cli("refine", "h2-air-flame", "-c", str(path), "--work", str(work), timeout=1500)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _rounds(work)
    assert [r["round"] for r in data["rounds"]] == [0]
    flame = data["rounds"][0]["evaluation"]["harvest"]["flames"][0]
    assert flame["case"] == "flame1d-phi0.7-1atm-300K" and "failed" not in flame, flame
    assert flame["ode_speed_m_s"] > 0.3 and abs(flame["speed_rel"]) < 0.5
    assert abs(flame["peak_error_k"]) < 200 and flame["heat_release_ratio"]
    assert flame["served"] > 0.9  # step_counts read the in-process solver's log
    evaluate = work / "round-0" / "evaluate"
    case = evaluate / "harvest" / flame["case"]
    assert (case / "constant" / MODEL_FILE).is_file()
    assert "modelFile" in (case / "constant" / "chemistryProperties").read_text()
    assert "(in-process; fallback cells by ode" in (case / "log.reactingFoam").read_text()
    assert not (evaluate / "serve.log").exists() and not (work / "round-0" / "serve").exists()
    log = (work / "progress.log").read_text()
    assert "serving refine-r" not in log and "running flame1d-phi0.7-1atm-300K (in-process)" in log
    assert (work / "round-0" / "states" / f"{flame['case']}.states.h5").is_file()
    print(f"in-process round 0 in {seconds:.0f} s: speed {flame['speed_m_s']:.4f} vs ODE "
          f"{flame['ode_speed_m_s']:.4f} m/s ({100 * flame['speed_rel']:+.2f} %), peak T "
          f"{flame['peak_error_k']:+.1f} K, served {100 * flame['served']:.1f} %")


def test_reference_states_key_is_checked_and_resumes_a_recipe_written_before_it(tmp_path):
    """``harvest.reference_states``: true or false only, true only with harvest flames (their ODE
    references are what it harvests); left out of the recipe when false, so that a work folder
    committed before the key existed resumes, and true is another recipe."""
    from mechanisms.errors import InputError
    from refinement.config import load_refine_config
    from refinement.workdir import WorkDir

    def config(**harvest) -> dict:
        data = yaml.safe_load((TINY / "refine.yaml").read_text())
        data["harvest"].update(harvest)
        return data

    for value in ("yes", 1):
        with pytest.raises(InputError, match=r"^harvest\.reference_states: must be true or false"):
            load_refine_config(_tiny_copy(tmp_path, config(reference_states=value)))
    with pytest.raises(InputError, match=r"^harvest\.reference_states: true needs harvest flames"):
        load_refine_config(_tiny_copy(tmp_path, config(reference_states=True)))
    old = load_refine_config(_tiny_copy(tmp_path, config())).recipe()
    assert "harvest_reference_states" not in old
    first = WorkDir(tmp_path / "w")
    first.commit(old)
    again = WorkDir(tmp_path / "w")
    again.commit(load_refine_config(_tiny_copy(tmp_path, config(reference_states=False))).recipe())
    assert again.recipe_digest == first.recipe_digest
    flames = [{"kind": "flame1d", "phi": 0.7, "end_time_s": 2e-4}]
    with_flames = load_refine_config(_tiny_copy(tmp_path, config(flames=flames)))
    assert with_flames.harvest_reference_states is False
    chosen = load_refine_config(_tiny_copy(tmp_path, config(flames=flames, reference_states=True)))
    assert chosen.harvest_reference_states is True
    assert chosen.recipe()["harvest_reference_states"] is True


@pytest.mark.slow
def test_a_round_harvests_the_reference_flames_states_when_asked(tmp_path):
    """``harvest.reference_states: true``: round 1's harvest labels the states of the harvest
    flame's ODE reference run as well as the model's own (extracted once into
    ``DIR/reference-states/``), and the round's dataset grows by the harvest recipe's rows."""
    from mechanisms.states_file import read_states

    _require_in_process_openfoam()
    config = yaml.safe_load((TINY / "refine.yaml").read_text())
    config["harvest"] = {"recipe": str(TINY / "harvest.yaml"), "workers": 0,
                         "flames": [{"kind": "flame1d", "phi": 0.7, "end_time_s": 2e-4}],
                         "reference_states": True}
    config["replay"]["recipes"] = [str(TINY / "replay.yaml")]
    config["train"] = {n: str(TINY / f"{n}.yaml") for n in ("main", "tail", "induction")}
    config["evaluate"] = {"chemistry": "deepkin-inprocess", "workers": 1}
    config["rounds"] = 1
    config["targets"] = {k: 1e-9 for k in _loose_targets()}  # never met: round 1 runs
    config["retrain"] = True  # the tiny networks of TINY's configs, not the shipped model's
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    proc = run_cli("refine", "h2-air-flame", "-c", str(path), "--work", str(work), timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    extracted = sorted((work / "reference-states").glob("*.states.h5"))
    assert len(extracted) == 1 and extracted[0].name.startswith("flame1d-phi0.7-1atm-300K-")
    states, species, _ = read_states(extracted[0])
    assert len(states) > 0 and "H2" in species
    harvest = json.loads((work / "round-1" / "harvest.json").read_text())
    files = harvest["figures"]["states_files"]
    assert f"reference-states/{extracted[0].name}" in files
    assert any(f.startswith("round-0/states/") for f in files)  # the model's own states too
    assert sum(harvest["figures"]["rows_added"].values()) > 0


def test_a_resumed_stage_counts_the_time_of_its_earlier_runs(tmp_path):
    """A stage resumed after its run was killed records (``seconds``, in rounds.md and the
    status's estimate) the time it had run before, by progress.log: from its ``started`` line to
    the last line that run wrote, plus this run's; a stage started afresh counts this run's only."""
    from refinement.workdir import WorkDir

    work = WorkDir(tmp_path / "w")
    work.commit({"name": "t"})
    begin = time.time() - 3600
    stamp = lambda offset: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(begin + offset))  # noqa: E731
    (work.root / "progress.log").write_text("\n".join([
        f"{stamp(0)} refine m.safetensors (t): up to 1 round(s) in {work.root}",
        f"{stamp(10)} r0/evaluate: started",
        f"{stamp(70)} r0/evaluate: running a case",
        f"{stamp(130)} r0/evaluate: running another case",  # then killed, at an unknown time
        f"{stamp(900)} refine m.safetensors (t): up to 1 round(s) in {work.root}",
        f"{stamp(900)} r0/evaluate: resumed",
        f"{stamp(960)} r0/evaluate: running the last case",  # killed again
        f"{stamp(1500)} refine m.safetensors (t): up to 1 round(s) in {work.root}", ""]))
    assert work.logged_seconds("r0/evaluate") == pytest.approx(120 + 60)
    assert work.logged_seconds("r1/harvest") == 0.0
    # the same inputs as the start its started.json records: resumed, the earlier time counted
    marker = work.marker_path("r0/evaluate")
    marker.parent.mkdir()
    marker.with_name(marker.stem + ".started.json").write_text(json.dumps(
        {"recipe": work.recipe_digest, "after": {"model": "m"}}))
    (work.root / "out.txt").write_text("x")
    record = work.run_stage("r0/evaluate", {"model": "m"},
                            lambda fresh: ([work.root / "out.txt"], {"fresh": fresh}))
    assert record.figures == {"fresh": False}
    assert 180 <= record.seconds < 190
    # other inputs: started afresh, only this run's time
    record = work.run_stage("r0/evaluate", {"model": "other"},
                            lambda fresh: ([work.root / "out.txt"], {"fresh": fresh}))
    assert record.figures == {"fresh": True} and record.seconds < 10


def test_refine_status_of_an_old_folder_without_lock(tmp_path):
    """A folder of a deepkin older than the lock (no run.lock): while progress.log is recent the
    run may be live (unknown, the stage shown with an estimate); once it has been unwritten for
    hours the stage is shown as stopped, saying why, with no estimate."""
    from refinement.status import STALE_AFTER_S, format_status, read_status

    work, _ = _hand_made_folder(tmp_path)
    assert not (work / "run.lock").exists()
    now = int(time.time())
    _log(work, now, (3000, f"refine m.safetensors (hand): up to 3 round(s) in {work}"),
         (2000, "r2/harvest: started"), (1900, "r2/harvest: finished in 100.0 s"),
         (1900, "r2/train-main: started"))
    recent = read_status(work, now=now)
    assert recent.running is None and recent.current.stage == "r2/train-main"
    assert "unknown: no run.lock" in format_status(recent)
    later = now + STALE_AFTER_S + 2000
    stale = read_status(work, now=later)
    text = format_status(stale)
    assert stale.running is False and stale.estimate is None
    assert "not running (no run.lock to ask; progress.log unwritten since" in text
    assert "\nstopped  r2/train-main" in text and "estimate" not in text


def test_refine_status_estimate_leaves_out_a_stage_that_computed_the_references(tmp_path):
    """Round 1's evaluation that also computed the flames' ODE references (hours, once per work
    folder) is not taken as what round 2's evaluation will cost; the line says so."""
    from refinement.status import format_status, read_status

    work, _ = _hand_made_folder(tmp_path)
    now = int(time.time())
    _log(work, now, (9000, f"refine m.safetensors (hand): up to 3 round(s) in {work}"),
         (8000, "r1/evaluate: started"),
         (8000, "references: 2 ODE flame(s) to compute, 2 at a time: a, b"),
         (7100, "r1/evaluate: finished in 900.0 s"),
         (2000, "r2/harvest: started"), (1900, "r2/harvest: finished in 100.0 s"),
         (1900, "r2/train-main: started"), (1620, "r2/train-main: finished in 280.0 s"),
         (60, "r2/train-tail: started"))
    e = read_status(work, now=now).estimate
    assert (e.left_out, e.with_references) == ([], ["r2/evaluate"])
    assert e.remaining_s == pytest.approx(200 - 60)
    text = format_status(read_status(work, now=now))
    assert text.splitlines()[-1].endswith("an estimate from round 1's stage times; not counting "
                                          "r2/evaluate (round 1's also computed the ODE "
                                          "references))")
