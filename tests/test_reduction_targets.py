"""Reduction targets beyond ignition delay, with real Cantera: the equilibrium temperature (a bound by
default), laminar flame speed (restarted from the detailed flame), PSR extinction, and how a
candidate is judged against several bounds."""

from __future__ import annotations

import numpy as np
import pytest

from mechanisms.executor import InlineExecutor
from mechanisms.reduction import Evaluator, parse_reduce_config, reference_targets, run_condition
from mechanisms.reduction.config import EQUILIBRIUM, FLAME, IGNITION, PSR
from mechanisms.reduction.constraints import binding, judge
from mechanisms.reduction.deepmr import CLIP, network_targets
from mechanisms.reduction.flame import flame_speed

H2_AIR = {"fuel": {"H2": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}
CH4_AIR = {"fuel": {"CH4": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}


def h2_input(**extra) -> dict:
    """h2o2.yaml: two constant-pressure ignitions, a lean and a stoichiometric flame, one PSR."""
    data = {"model": "h2o2.yaml", "targets": ["H2", "O2"], "error": 10.0,
            "autoignition-conditions": [{"kind": "constant pressure", "temperature": [1000.0, 1200.0],
                                         "pressure": 1.0, "equivalence-ratio": 1.0, **H2_AIR}],
            "laminar-flame-conditions": [{"temperature": 300.0, "pressure": 1.0,
                                          "equivalence-ratio": [0.7, 1.0], **H2_AIR}],
            "psr-conditions": [{"temperature": 300.0, "pressure": 1.0, "equivalence-ratio": 1.0,
                                **H2_AIR}],
            "laminar-flame-error": 5.0, "psr-error": 5.0}
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def h2(tmp_path_factory):
    """The h2o2 problem, its cached detailed reference and an inline evaluator."""
    config = parse_reduce_config(h2_input())
    reference = reference_targets(config, InlineExecutor(), tmp_path_factory.mktemp("cache"))
    return config, reference, Evaluator(config, reference, InlineExecutor())


def keep_all_but(config, *removed: str) -> np.ndarray:
    return np.array([n not in removed for n in config.mechanism.species_names])


def test_dropping_co2_fails_on_equilibrium_by_default(tmp_path):
    """The issue's trap: an answer without CO2 ignites on time and ends ~400 K too hot."""
    data = {"model": "gri30.yaml", "targets": ["CH4", "O2"], "retained-species": ["N2"], "error": 10.0,
            "autoignition-conditions": [{"kind": "constant volume", "temperature": 1400.0,
                                         "pressure": 1.0, "equivalence-ratio": 1.0, **CH4_AIR}]}
    config = parse_reduce_config(data)
    assert config.bounds_percent == {IGNITION: 10.0, EQUILIBRIUM: 1.0}
    reference = reference_targets(config, InlineExecutor(), tmp_path)
    no_co2 = keep_all_but(config, "CO2")
    score = Evaluator(config, reference, InlineExecutor()).evaluate([no_co2])[0]
    assert score.target_errors[IGNITION] < 0.10  # the ignition delay alone would pass
    assert score.target_errors[EQUILIBRIUM] > 0.05 and score.eq_error_k > 150
    assert not score.passed
    loose = parse_reduce_config({**data, "equilibrium-error": 50.0})
    assert Evaluator(loose, reference, InlineExecutor()).evaluate([no_co2])[0].passed


def test_every_target_has_its_bound_and_the_detailed_model_meets_them(h2):
    config, reference, evaluator = h2
    assert [c.target for c in config.conditions] == [IGNITION, IGNITION, FLAME, FLAME, PSR]
    assert evaluator.bounds == {IGNITION: 0.10, FLAME: 0.05, PSR: 0.05, EQUILIBRIUM: 0.01}
    lean, stoich = reference.values[2:4]
    assert 0.9 < lean < stoich and 1.8 < stoich < 2.8  # m/s: H2/air burns at ~2.3 m/s
    assert 1e-6 < reference.values[4] < 1e-3  # s: a stoichiometric H2/air PSR blows out near 10 µs
    assert set(reference.profiles) == {2, 3}
    assert reference.samples.shape == (5, 20, 12)  # flames and the PSR are sampled for the graphs
    full = evaluator.evaluate([np.ones(10, dtype=bool)])[0]
    assert full.passed and full.max_error < 1e-3  # restarted from its own solution: its own speed
    assert full.statuses == ["ok"] * 5


def test_flame_restarted_from_the_detailed_solution_matches_a_fresh_solve(h2):
    config, reference, _ = h2
    from mechanisms.reduction.writer import ReducedModelBuilder

    gas = ReducedModelBuilder(config.mechanism.solution()).solution(keep_all_but(config, "AR", "H2O2"),
                                                                    transport=True)
    cond = config.conditions[2]
    restarted = flame_speed(gas, cond, 0.05, reference.profiles[2])
    fresh = flame_speed(gas, cond, 0.05)
    assert restarted.status == fresh.status == "ok"
    assert restarted.speed_m_s == pytest.approx(fresh.speed_m_s, rel=0.01)


def test_costly_targets_run_only_for_candidates_within_the_cheap_bounds(h2):
    config, _, evaluator = h2
    no_ho2 = keep_all_but(config, "HO2")  # far too slow to ignite at 1000 K
    score = evaluator.evaluate([no_ho2])[0]
    assert not score.passed and score.target_errors[IGNITION] > 0.10
    assert score.statuses[2:] == ["skipped"] * 3 and np.isnan(score.target_errors[FLAME])
    assert np.isfinite(score.t_eq_k).all()  # the equilibrium of every condition is still judged
    y = network_targets([score], evaluator)
    assert y.shape == (1, 10) and np.isnan(y[0, 2:5]).all() and y[0, 0] > 1.0
    checked = evaluator.evaluate([no_ho2], gate=False)[0]  # as the verification runs it
    assert checked is score  # remembered: the first score stands for the mask


def test_psr_extinction_of_a_reduced_model_that_cannot_burn(h2):
    config, reference, _ = h2
    from mechanisms.reduction.writer import ReducedModelBuilder

    gas = ReducedModelBuilder(config.mechanism.solution()).solution(keep_all_but(config, "H", "O", "OH"))
    result = run_condition(gas, config.conditions[4], config.simulation, reference=reference.values[4])
    assert result.status in ("no-ignition", "failed") and result.value is None


def test_judge_and_binding():
    bounds = {IGNITION: 0.1, EQUILIBRIUM: 0.01}
    verdict = judge(np.array([0.05, 0.02]), np.array([0.002, 0.012]), [IGNITION, IGNITION], bounds,
                    {IGNITION: 1.0, EQUILIBRIUM: 3.0})
    assert verdict.errors == {IGNITION: 0.05, EQUILIBRIUM: 0.012}
    assert not verdict.passed and verdict.violation == pytest.approx(1.2)
    assert verdict.objective == pytest.approx((0.5 + 3 * 1.2) / 4)
    answer = np.array([True, True, True, False])
    smaller = [(np.array([True, True, False, False]), {IGNITION: 0.3, EQUILIBRIUM: 0.001}),
               (np.array([True, False, True, False]), {IGNITION: 0.02, EQUILIBRIUM: 0.05}),
               (np.array([False, True, True, False]), {IGNITION: 0.02, EQUILIBRIUM: 0.09}),
               (np.array([True, True, False, True]), {IGNITION: 0.9, EQUILIBRIUM: 0.9})]  # not inside
    found = binding(answer, {IGNITION: 0.08, EQUILIBRIUM: 0.004}, bounds, smaller)
    assert found["bound_by"] == EQUILIBRIUM and found["tightest"] == IGNITION
    assert found["smaller_tried"] == 3 and found["smaller_failed_on"] == {IGNITION: 1, EQUILIBRIUM: 2}
    assert CLIP > 1
