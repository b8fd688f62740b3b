"""Mechanism reduction with real Cantera: writer, targets and cache, DRG/DRGEP, DeePMR, resume."""

from __future__ import annotations

import json
from pathlib import Path

import cantera as ct
import numpy as np
import pytest
import yaml

from mechanisms.executor import InlineExecutor
from mechanisms.reduction import (
    Evaluator,
    ReducedModelBuilder,
    load_reduce_config,
    parse_reduce_config,
    reference_targets,
    run_condition,
    run_deepmr,
    run_reduction,
    verify_written,
)

CH4_AIR = {"fuel": {"CH4": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}


def gri_input(temperatures=(1000.0, 1400.0), pressures=(1.0, 20.0), phis=(1.0,), **extra) -> dict:
    """A GRI-3.0 methane/air input with a small grid of constant-volume conditions."""
    data = {"model": "gri30.yaml", "targets": ["CH4", "O2"], "retained-species": ["N2"], "error": 5.0,
            "autoignition-conditions": [{"kind": "constant volume", "temperature": list(temperatures),
                                         "pressure": list(pressures), "equivalence-ratio": list(phis),
                                         **CH4_AIR}]}
    data.update(extra)
    return data


def write_input(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def test_writer_without_removal_reproduces_detailed_ignition(tmp_path, cache_dir):
    config = parse_reduce_config(gri_input(temperatures=(1200.0,), pressures=(10.0,)))
    reference = reference_targets(config, InlineExecutor(), cache_dir)
    builder = ReducedModelBuilder(config.mechanism.solution())
    path = tmp_path / "same.yaml"
    builder.write_yaml(np.ones(53, dtype=bool), path, "nothing removed", {"method": "none"})
    loaded = ct.Solution(str(path))
    assert (loaded.n_species, loaded.n_reactions) == (53, 325)
    assert loaded.transport_model == "mixture-averaged"  # transport data kept
    doc = yaml.safe_load(path.read_text())
    assert doc["description"] == "nothing removed" and doc["deepkin-reduction"]["method"] == "none"
    result = run_condition(loaded, config.conditions[0], config.simulation)
    assert result.status == "ok"
    assert result.value == pytest.approx(reference.values[0], rel=1e-6)  # YAML round-trip of rates


def test_writer_drops_removed_species_everywhere(tmp_path):
    gas = ct.Solution("gri30.yaml")
    keep = np.array([n not in ("AR", "C2H6", "C3H8", "C3H7") for n in gas.species_names])
    builder = ReducedModelBuilder(gas)
    path = tmp_path / "reduced.yaml"
    builder.write_yaml(keep, path, "test", {"method": "test"})
    reduced = ct.Solution(str(path))
    assert reduced.n_species == 49
    assert "Ar" not in reduced.element_names
    # the explicit-collider reaction H + O2 + AR is gone, not silently kept or skipped
    equations = [r.equation for r in reduced.reactions()]
    assert "H + O2 + AR <=> HO2 + AR" not in equations
    assert reduced.n_reactions == int(builder.reaction_mask(keep).sum())
    for rxn in reduced.reactions():
        if rxn.third_body is not None:
            assert not {"AR", "C2H6"} & set(rxn.third_body.efficiencies), rxn.equation
    # the in-memory model used to score candidates is the same model
    memory = builder.solution(keep)
    assert [r.equation for r in memory.reactions()] == equations


def test_reference_cache_is_keyed_by_conditions(cache_dir):
    config = parse_reduce_config(gri_input(temperatures=(1400.0,), pressures=(1.0,)))
    first = reference_targets(config, InlineExecutor(), cache_dir)
    again = reference_targets(config, InlineExecutor(), cache_dir)
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.values, again.values)
    assert again.samples.shape == (1, 20, 55)
    changed = parse_reduce_config(gri_input(temperatures=(1400.0,), pressures=(2.0,)))
    other = reference_targets(changed, InlineExecutor(), cache_dir)
    assert not other.cached and other.key != first.key
    assert other.values[0] < first.values[0]  # higher pressure ignites sooner: really recomputed


def test_non_igniting_candidate_scores_100_percent_and_run_goes_on(cache_dir):
    config = parse_reduce_config(gri_input())
    reference = reference_targets(config, InlineExecutor(), cache_dir)
    evaluator = Evaluator(config, reference, InlineExecutor())
    names = config.mechanism.species_names
    dead = np.array([n in ("CH4", "O2", "N2", "H2O", "CO2") for n in names])  # no radicals at all
    full = np.ones(len(names), dtype=bool)
    scores = evaluator.evaluate([dead, full])
    assert scores[0].statuses == ["no-ignition"] * 4
    assert scores[0].max_error == 1.0 and not scores[0].passed
    assert scores[1].passed and scores[1].max_error < 1e-9


@pytest.mark.parametrize("method", ["drg", "drgep"])
def test_graph_methods_on_gri(tmp_path, cache_dir, method):
    config = parse_reduce_config(gri_input(method=method))
    summary = run_reduction(config, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    red = summary["reduced"]
    assert 20 < red["n_species"] < 53
    assert summary["verification"]["passed"]
    assert summary["verification"]["max_error_percent"] <= 5.0
    assert set(summary["forced_species"]) <= set(red["species"])
    # the file on disk is what was verified
    reduced = ct.Solution(red["path"])
    assert reduced.n_species == red["n_species"] and reduced.n_reactions == red["n_reactions"]
    header = yaml.safe_load(Path(red["path"]).read_text())["deepkin-reduction"]
    assert header["method"] == method and header["source-sha256"] == config.mechanism.sha256
    assert header["bounds-percent"] == {"ignition-delay": 5.0, "equilibrium-temperature": 1.0}
    assert len(header["conditions"]) == 4 and header["max-errors-percent"]["ignition-delay"] <= 5.0
    # bisection ran to neighbours: the next level up was tried and failed
    steps = summary["method_details"]["steps"]
    best_level = max(s["level"] for s in steps if s["passed"])
    assert any(s["level"] == best_level + 1 and not s["passed"] for s in steps)
    # report, PNG and JSON beside the mechanism
    out = tmp_path / "out"
    written = json.loads((out / f"{method}-summary.json").read_text())
    assert written["reduced"]["n_species"] == red["n_species"]
    report = (out / f"{method}-report.md").read_text()
    assert f"{red['n_species']} species" in report and "cv T0=1400 K P=20 atm phi=1" in report
    assert (out / f"{method}-ignition.png").read_bytes()[:4] == b"\x89PNG"
    assert all(row["t_eq_reduced_k"] is not None for row in summary["conditions"])


def test_drgep_through_dask_verifies_the_written_file(tmp_path, cache_dir):
    """With worker processes, the verification must run the written file, not the detailed one."""
    config = parse_reduce_config(gri_input(temperatures=(1200.0,), pressures=(1.0, 20.0), method="drgep"))
    summary = run_reduction(config, tmp_path / "out", workers=2, progress=False, cache_dir=cache_dir)
    assert summary["reduced"]["n_reactions"] < 325
    assert summary["verification"]["passed"]
    assert "Dask" in summary["executor"]


def test_tight_equilibrium_bound_is_held(tmp_path, cache_dir):
    config = parse_reduce_config(gri_input(method="drgep", **{"equilibrium-error": 0.02}))
    summary = run_reduction(config, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    assert summary["verification"]["passed"]
    assert summary["verification"]["max_eq_error_percent"] <= 0.02
    assert summary["verification"]["max_eq_error_k"] <= 0.0002 * 2900
    assert "CO2" in summary["reduced"]["species"]


def small_deepmr(tmp_path: Path, iterations: int, seed: int = 3) -> dict:
    return gri_input(method="deepmr", deepmr={
        "seed": seed, "initial-candidates": 24, "candidates-per-iteration": 16, "iterations": iterations,
        "max-simulations": 400, "children-per-parent": 60, "epochs": 60, "hidden": [32]})


def test_deepmr_small_run_returns_verified_smaller_mechanism(tmp_path, cache_dir):
    config = parse_reduce_config(small_deepmr(tmp_path, iterations=3))
    summary = run_reduction(config, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    assert summary["verification"]["passed"]
    assert summary["verification"]["max_error_percent"] <= 5.0
    assert summary["reduced"]["n_species"] < 53
    history = summary["method_details"]["history"]
    assert [h["iteration"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["best_size"] == summary["reduced"]["n_species"]
    checkpoint = json.loads((tmp_path / "out" / "deepmr-checkpoint.json").read_text())
    assert checkpoint["iteration"] == 3 and checkpoint["n_simulated"] == summary["simulated_candidates"]


class Killed(Exception):
    pass


def test_deepmr_resumes_after_a_kill_with_the_same_answer(tmp_path, cache_dir):
    config = parse_reduce_config(small_deepmr(tmp_path, iterations=3))
    reference = reference_targets(config, InlineExecutor(), cache_dir)
    forced = config.forced_mask()

    def run(prefix: Path, log=None):
        return run_deepmr(Evaluator(config, reference, InlineExecutor()), forced, config.deepmr, prefix,
                          log=log)

    straight = run(tmp_path / "a" / "ckpt")

    def kill_in_iteration_2(msg: str) -> None:
        if msg.startswith("deepmr iteration 2"):
            raise Killed  # after iteration 2 simulated, before its checkpoint: a kill mid-iteration

    with pytest.raises(Killed):
        run(tmp_path / "b" / "ckpt", log=kill_in_iteration_2)
    saved = json.loads((tmp_path / "b" / "ckpt.json").read_text())
    assert saved["iteration"] == 1
    lines: list[str] = []
    resumed = run(tmp_path / "b" / "ckpt", log=lines.append)
    assert resumed.resumed_from == 1 and lines[0].startswith("resuming DeePMR")
    assert resumed.n_simulated == straight.n_simulated
    assert [h["smallest_passing"] for h in resumed.history] == \
        [h["smallest_passing"] for h in straight.history]
    np.testing.assert_array_equal(resumed.ranked[0].mask, straight.ranked[0].mask)


def test_deepmr_budget_can_be_raised_to_continue(tmp_path, cache_dir):
    config = parse_reduce_config(small_deepmr(tmp_path, iterations=1))
    first = run_reduction(config, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    assert first["method_details"]["stop_reason"].startswith("iteration budget")
    more = parse_reduce_config(small_deepmr(tmp_path, iterations=2))
    second = run_reduction(more, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    details = second["method_details"]
    assert details["resumed_from_iteration"] == 1
    assert [h["iteration"] for h in details["history"]] == [0, 1, 2]
    assert second["reduced"]["n_species"] <= first["reduced"]["n_species"]


def test_example_input_parses_to_36_conditions():
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "reduce-gri30-methane.yaml"
    config = load_reduce_config(example)
    assert len(config.conditions) == 36
    assert {c.kind for c in config.conditions} == {"constant volume"}
    assert sorted({round(c.pressure_pa / ct.one_atm) for c in config.conditions}) == [1, 11, 21]
    assert config.method == "drgep" and config.error_percent == 10.0
    assert config.bounds_percent == {"ignition-delay": 10.0, "equilibrium-temperature": 1.0}


def test_flame_speed_target_of_hydrogen_air():
    config = parse_reduce_config({
        "model": "h2o2.yaml", "error": 5.0, "laminar-flame-conditions": [
            {"temperature": 300.0, "pressure": 1.0, "equivalence-ratio": 1.0, "fuel": {"H2": 1.0},
             "oxidizer": {"O2": 1.0, "N2": 3.76}}]})
    result = run_condition(config.mechanism.solution(), config.conditions[0], config.simulation)
    assert result.status == "ok"
    assert 1.8 < result.value < 2.8  # m/s; stoichiometric H2/air burns at about 2.3 m/s


def test_verify_written_rejects_a_mechanism_missing_key_chemistry(tmp_path, cache_dir):
    config = parse_reduce_config(gri_input(temperatures=(1400.0,), pressures=(1.0,)))
    reference = reference_targets(config, InlineExecutor(), cache_dir)
    gas = config.mechanism.solution()
    keep = np.array([n not in ("HO2", "H2O2", "CH3O", "CH2O", "HCO") for n in gas.species_names])
    path = tmp_path / "bad.yaml"
    ReducedModelBuilder(gas).write_yaml(keep, path, "missing HO2", {"method": "test"})
    check = verify_written(str(path), config, reference, InlineExecutor())
    assert check.n_species == 48
    assert not check.passed and check.max_error > 0.05


def test_max_dtdt_criterion_is_near_the_temperature_rise_one(cache_dir):
    rise = parse_reduce_config(gri_input(temperatures=(1400.0,), pressures=(1.0,)))
    steep = parse_reduce_config(gri_input(temperatures=(1400.0,), pressures=(1.0,),
                                          simulation={"ignition-criterion": "max-dTdt"}))
    gas = rise.mechanism.solution()
    t_rise = run_condition(gas, rise.conditions[0], rise.simulation).value
    t_steep = run_condition(gas, steep.conditions[0], steep.simulation).value
    assert t_steep != t_rise
    assert t_steep == pytest.approx(t_rise, rel=0.05)  # methane ignites abruptly: both mark the jump
    assert steep.conditions_key() != rise.conditions_key()  # a different cache entry


@pytest.mark.slow
def test_drgep_with_a_flame_speed_target(tmp_path, cache_dir):
    config = parse_reduce_config({
        "model": "h2o2.yaml", "targets": ["H2", "O2"], "method": "drgep", "error": 5.0,
        "autoignition-conditions": [{"kind": "constant pressure", "temperature": 1100.0, "pressure": 1.0,
                                     "equivalence-ratio": 1.0, "fuel": {"H2": 1.0},
                                     "oxidizer": {"O2": 1.0, "N2": 3.76}}],
        "laminar-flame-conditions": [{"temperature": 300.0, "pressure": 1.0, "equivalence-ratio": 1.0,
                                      "fuel": {"H2": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}]})
    summary = run_reduction(config, tmp_path / "out", workers=0, progress=False, cache_dir=cache_dir)
    assert summary["verification"]["passed"]
    flame = summary["conditions"][1]
    assert flame["kind"] == "flame" and 1.8 < flame["detailed"] < 2.8 and flame["error"] <= 0.05
    assert ct.Solution(summary["reduced"]["path"]).transport_model == "mixture-averaged"


def test_drgep_on_an_existing_dask_scheduler_twice(tmp_path, cache_dir):
    """--scheduler: two runs on one long-lived cluster must not see each other's shared data."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        small = parse_reduce_config(gri_input(temperatures=(1200.0,), pressures=(1.0,), method="drgep"))
        first = run_reduction(small, tmp_path / "a", scheduler=cluster.scheduler_address, progress=False,
                              cache_dir=cache_dir)
        other = parse_reduce_config(gri_input(temperatures=(1600.0,), pressures=(20.0,), method="drgep"))
        second = run_reduction(other, tmp_path / "b", scheduler=cluster.scheduler_address, progress=False,
                               cache_dir=cache_dir)
    assert first["verification"]["passed"] and second["verification"]["passed"]
    assert "scheduler" in first["executor"]
    assert second["conditions"][0]["detailed"] < 1e-4 < first["conditions"][0]["detailed"]


def test_deepmr_can_start_from_the_drgep_answer(tmp_path, cache_dir):
    data = small_deepmr(tmp_path, iterations=1)
    data["deepmr"]["start"] = "drgep"
    summary = run_reduction(parse_reduce_config(data), tmp_path / "out", workers=0, progress=False,
                            cache_dir=cache_dir)
    start = summary["method_details"]["start_species"]
    assert start < 53
    assert summary["verification"]["passed"]
    assert summary["reduced"]["n_species"] <= start
