"""PFA, the sensitivity analysis after a graph method, and pyMARS's target-weights, with real
Cantera on GRI-3.0 at two conditions."""

from __future__ import annotations

import numpy as np
import pytest

from mechanisms.executor import InlineExecutor
from mechanisms.reduction import (
    METHODS,
    drgep_importance,
    parse_reduce_config,
    reference_targets,
    run_reduction,
)
from mechanisms.reduction.pfa import pfa_matrix

CH4_AIR = {"fuel": {"CH4": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}


def gri(**extra) -> dict:
    data = {"model": "gri30.yaml", "targets": ["CH4", "O2"], "retained-species": ["N2"], "error": 10.0,
            "autoignition-conditions": [{"kind": "constant volume", "temperature": [1000.0, 1400.0],
                                         "pressure": 10.0, "equivalence-ratio": 1.0, **CH4_AIR}]}
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def reduce(tmp_path, cache_dir, **extra) -> dict:
    return run_reduction(parse_reduce_config(gri(**extra)), tmp_path / "out", workers=0, progress=False,
                         cache_dir=cache_dir)


def test_pfa_is_registered_and_verified(tmp_path, cache_dir):
    assert list(METHODS) == ["drg", "drgep", "pfa", "deepmr"]
    summary = reduce(tmp_path, cache_dir, method="PFA")
    assert summary["method"] == "pfa" and summary["verification"]["passed"]
    assert 15 < summary["reduced"]["n_species"] < 53
    assert (tmp_path / "out" / "pfa.yaml").is_file()


def test_pfa_coefficients_include_the_second_generation():
    import cantera as ct

    gas = ct.Solution("gri30.yaml")
    gas.TPX = 1500.0, ct.one_atm, "CH4:1, O2:2, N2:7.52, OH:1e-3, H:1e-3, CH3:1e-4"
    state = np.concatenate([[gas.T, gas.P], gas.Y])
    r = pfa_matrix(gas, state)
    assert r.shape == (53, 53) and (r >= 0).all() and (r <= 1).all() and not np.diag(r).any()
    ch4, ch3, ch2o = (gas.species_index(n) for n in ("CH4", "CH3", "CH2O"))
    assert r[ch4, ch3] > 0.1  # CH4 is consumed mostly into CH3
    assert r[ch4, ch2o] > 0  # reached only through an intermediate (second generation)


def test_drgep_with_sensitivity_analysis_is_smaller_and_verified(tmp_path, cache_dir):
    plain = reduce(tmp_path / "plain", cache_dir, method="drgep", error=5.0)
    sa = reduce(tmp_path / "sa", cache_dir, method="drgep", error=5.0, **{
        "sensitivity-analysis": True, "sensitivity-type": "greedy"})
    assert sa["method"] == "drgep-sa" and (tmp_path / "sa" / "out" / "drgep-sa.yaml").is_file()
    assert sa["verification"]["passed"]
    assert sa["reduced"]["n_species"] < plain["reduced"]["n_species"]
    steps = sa["method_details"]["sensitivity"]["steps"]
    assert steps and all(s["passed"] for s in steps[:-1])
    assert sa["method_details"]["sensitivity"]["graph_species"] == plain["reduced"]["n_species"]
    report = (tmp_path / "sa" / "out" / "drgep-sa-report.md").read_text()
    assert "## Sensitivity analysis" in report and "| without |" in report


def test_sensitivity_analysis_survives_candidates_that_cannot_ignite(tmp_path, cache_dir):
    """Every species in limbo (ε* = 1): removing H, OH or HO2 kills the ignition; those candidates
    score 100 % and stay, the analysis goes on (pyMARS #64, #69 crashed here)."""
    summary = reduce(tmp_path, cache_dir, method="drgep", **{
        "sensitivity-analysis": True, "sensitivity-type": "initial", "upper-threshold": 1.0})
    assert summary["verification"]["passed"]
    kept = set(summary["reduced"]["species"])
    assert {"H", "OH", "HO2", "CO2"} <= kept
    assert summary["method_details"]["sensitivity"]["steps"][-1]["passed"] is False


def test_sensitivity_analysis_with_nothing_in_limbo_says_so(tmp_path, cache_dir):
    summary = reduce(tmp_path, cache_dir, method="drgep", **{
        "sensitivity-analysis": True, "upper-threshold": 1e-12})
    sa = summary["method_details"]["sensitivity"]
    assert sa["steps"] == [] and summary["reduced"]["n_species"] == sa["graph_species"]
    assert "No species in limbo" in (tmp_path / "out" / "drgep-sa-report.md").read_text()


def test_target_weights_of_a_condition_weigh_its_targets(cache_dir):
    config = parse_reduce_config(gri())
    reference = reference_targets(config, InlineExecutor(), cache_dir)
    gas = config.mechanism.solution()
    states = reference.samples.reshape(-1, reference.samples.shape[-1])
    both = drgep_importance(gas, states, ["CH4", "O2"])
    ch4_only = drgep_importance(gas, states, ["CH4", "O2"], np.tile([1.0, 0.0], (len(states), 1)))
    halved = drgep_importance(gas, states, ["CH4", "O2"], np.full((len(states), 2), 0.5))
    assert (ch4_only <= both + 1e-15).all() and (ch4_only < both).any()
    np.testing.assert_allclose(halved, 0.5 * both)
    weighted = parse_reduce_config(gri(**{"autoignition-conditions": [
        {**gri()["autoignition-conditions"][0], "target-weights": [1, 0]}]}))
    assert [c.target_weights for c in weighted.conditions] == [(1.0, 0.0), (1.0, 0.0)]
    assert weighted.conditions_key() == config.conditions_key()  # no detailed rerun for weights


@pytest.mark.slow
def test_ndodecane_drgep_and_deepmr_at_four_conditions(tmp_path, cache_dir):
    """The 100-species fuel, no transport data: both methods verified, Chemkin without transport."""
    data = {"model": "nDodecane_Reitz.yaml", "phase-name": "nDodecane_IG", "targets": ["c12h26", "o2"],
            "retained-species": ["n2"], "error": 10.0, "autoignition-conditions": [
                {"kind": "constant pressure", "temperature": [800.0, 1200.0], "pressure": 20.0,
                 "equivalence-ratio": [0.5, 1.5], "fuel": {"c12h26": 1.0},
                 "oxidizer": {"o2": 1.0, "n2": 3.76}}],
            "deepmr": {"seed": 1, "start": "drgep", "initial-candidates": 40,
                       "candidates-per-iteration": 24, "iterations": 3, "children-per-parent": 100,
                       "epochs": 100, "hidden": [64]}}
    results = {}
    for method in ("drgep", "deepmr"):
        summary = run_reduction(parse_reduce_config({**data, "method": method}), tmp_path / method,
                                workers=0, progress=False, cache_dir=cache_dir)
        assert summary["verification"]["passed"]
        assert set(summary["reduced"]["chemkin"]) == {"mechanism", "thermo"}
        results[method] = summary["reduced"]["n_species"]
    assert results["deepmr"] <= results["drgep"] < 100  # a small budget, started around DRGEP
