"""The training domain as what was covered (model file format 4): the occupancy grid the trainer
writes, the Integrator's check against it, the induction network and its routing, and the
load-time checks of the new metadata. Real training runs on the session's small dataset."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cantera as ct
import numpy as np
import pytest
import torch

from kinetics.integrator import ROUTE_INDUCTION, ROUTE_TAIL, ROUTE_UNRESOLVED, Integrator
from kinetics.model.model_file import FORMAT_VERSION, read_model_file
from kinetics.networks.transforms import box_cox
from mechanisms import InputError
from mechanisms.dataset_file import read_dataset
from tests.conftest import run_cli
from tests.helpers.models import rewrite_model_file

TRAIN = """name: domain-h2
model: {type: mlp, hidden: [24, 24]}
epochs: 1
batch_size: 256
block_rows: 2048
frozen_temperature_k: 400.0
output_transform: {type: signed_power, lambda: 0.5}
"""
AIR = "O2:1,N2:3.76"
NEXT_TO_NO_N2 = "H2:2,O2:1,N2:0.001"  # hot H2/O2 with next to no diluent: in the box, out of the grid


def _train(dataset: Path, folder: Path, name: str, text: str) -> Path:
    cfg = folder / f"{name}.yaml"
    cfg.write_text(text)
    out = folder / f"{name}.safetensors"
    proc = run_cli("train", str(dataset), "-c", str(cfg), "-o", str(out), "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def models(small_dataset, tmp_path_factory) -> dict[str, Path]:
    """A main model with the occupancy domain, the same with a near-equilibrium network, and
    with an induction network added on top."""
    d = tmp_path_factory.mktemp("domain")
    main = _train(small_dataset, d, "main", TRAIN)
    regime = ("model: {hidden: [8]}\nepochs: 1\nblock_rows: 2048\n"
              "output_transform: {type: signed_power, lambda: 0.5}\nroute_below: 0.05\n")
    tail = _train(small_dataset, d, "tail", regime + f"tail_of: {main}\n")
    both = _train(small_dataset, d, "both",
                  regime + f"tail_of: {tail}\nregime: induction\nprogress_below: 0.5\n")
    return {"main": main, "tail": tail, "both": both}


def _state(gas: ct.Solution, t: float, p_atm: float, y: np.ndarray | str) -> np.ndarray:
    if isinstance(y, str):
        gas.TPX = t, p_atm * ct.one_atm, y
    else:
        gas.TPY = t, p_atm * ct.one_atm, y
    return np.r_[gas.T, gas.P, gas.Y]


def test_the_trainer_records_what_it_covered(models, small_dataset):
    meta, tensors, _ = read_model_file(models["main"])
    assert meta.format_version == FORMAT_VERSION
    domain = meta.domain
    assert domain["check"] == "occupancy" and domain["fuel"] == "H2:1" and domain["oxidizer"] == AIR
    assert domain["coordinates"] == ["mixture_fraction", "diluent", "temperature_k",
                                     "log_pressure", "progress"]
    occupancy = tensors["domain.occupancy"]
    assert occupancy.dtype == torch.uint8
    assert list(occupancy.shape) == [len(e) - 1 for e in domain["edges"]]
    assert 0 < domain["covered_bins"] <= domain["domain_bins"] == int(occupancy.sum())
    assert domain["domain_bins"] < 0.05 * domain["total_bins"]  # a thin set, not the box
    # The manifold's rows (flames, ignition; validation rows too) are inside; lone multi-scale rows
    # (one to a bin, min_rows 2, no covered neighbour) are not.
    it = Integrator.load(models["main"], device="cpu")
    shares = {}
    for sources in (("autoignition", "free_flame", "counterflow"), ("multiscale",)):
        inputs, _, _ = read_dataset(small_dataset, sources)
        x = torch.as_tensor(inputs)
        y = x[:, 2:]
        shares[sources[0]] = float(it.in_domain(x[:, 0], x[:, 1], box_cox(y, 0.1), y)
                                   .double().mean())
    assert shares["autoignition"] > 0.9 and shares["multiscale"] < 0.5, shares
    assert 0.5 < domain["rows_in_domain"] < 1.0


def test_states_the_data_never_held_are_out_though_the_box_holds_them(models):
    """Hot H2/O2 with next to no nitrogen and a hot unburnt stoichiometric mixture lie inside
    every species' trained range (the formats 1-3 check), but in bins no training row came near.
    (0.1 % N2 by mole, not none: whether a row of the tiny dataset holds N2 at exactly 0, where
    Box-Cox is -10, or at ~1e-16 hangs on round-off: the fresh machine of 2026-12-07 gave
    1.9e-16 at the least, and the box no longer took N2 = 0.)"""
    it = Integrator.load(models["main"], device="cpu")
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    stoich = gas.Y.copy()
    never = np.array([_state(gas, 1500.0, 1.0, NEXT_TO_NO_N2),  # next to no diluent
                      _state(gas, 2600.0, 5.0, stoich)])       # unburnt at 2600 K
    x = torch.as_tensor(never)
    y = x[:, 2:]
    bct = box_cox(y, 0.1)
    assert not it.in_domain(x[:, 0], x[:, 1], bct, y).any()
    it.domain_check, it.grid = "box", None  # the per-species box alone takes them
    assert it.in_domain(x[:, 0], x[:, 1], bct, y).all()
    res = Integrator.load(models["main"], device="cpu").advance(never)
    assert res.n_fallback == 2  # Cantera steps them


def test_the_induction_network_takes_slow_fresh_cells_and_the_tail_slow_burnt_ones(models):
    meta, tensors, _ = read_model_file(models["both"])
    tail_meta, tail_tensors, _ = read_model_file(models["tail"])
    assert meta.induction["progress_below"] == 0.5 and meta.tail == tail_meta.tail
    assert 0 < meta.induction["training"]["rows_train"] < tail_meta.training["rows_train"]
    for name, value in tail_tensors.items():  # the main and near-equilibrium networks stay
        assert torch.equal(tensors[name], value), name
    it = Integrator.load(models["both"], device="cpu")
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    fresh = _state(gas, 1050.0, 1.0, gas.Y.copy())
    gas.equilibrate("HP")
    burnt = _state(gas, gas.T, 1.0, gas.Y.copy())
    states = np.array([fresh, fresh, burnt])
    it.route_below = it.induction_route_below = np.inf  # every cell counts as slow
    x = torch.as_tensor(states)
    _, route = it.rates(x[:, 0], x[:, 1], box_cox(x[:, 2:], 0.1))
    assert route.tolist() == [ROUTE_INDUCTION, ROUTE_INDUCTION, ROUTE_TAIL]
    res = it.advance(states)
    assert res.n_induction_steps == 2 - int(res.fallback[:2].sum())
    assert res.n_tail_steps == 1 - int(res.fallback[2])
    it.induction_progress_below = 0.0  # no cell is fresh enough: the tail takes them all
    _, route = it.rates(x[:, 0], x[:, 1], box_cox(x[:, 2:], 0.1))
    assert route.tolist() == [ROUTE_TAIL] * 3


def test_cells_below_the_induction_networks_resolution_are_stepped_by_cantera(models, tmp_path):
    """fallback_below (the recipe's, recorded in the induction record) hands slow fresh cells to
    Cantera; hot air and hot fuel, with nothing to burn, stay with the network."""
    floor = rewrite_model_file(models["both"], tmp_path / "floor.safetensors",
                               lambda raw: raw["induction"].__setitem__("fallback_below", 1e9))
    it = Integrator.load(floor, device="cpu")
    assert it.induction_fallback_below == 1e9
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    fresh = _state(gas, 1050.0, 1.0, gas.Y.copy())
    air = _state(gas, 1050.0, 1.0, AIR)
    fuel = _state(gas, 1050.0, 1.0, "H2:1,N2:1")
    states = np.array([fresh, air, fuel])
    it.route_below = it.induction_route_below = np.inf  # every cell counts as slow
    x = torch.as_tensor(states)
    _, route = it.rates(x[:, 0], x[:, 1], box_cox(x[:, 2:], 0.1), x[:, 2:])
    assert route.tolist() == [ROUTE_UNRESOLVED, ROUTE_INDUCTION, ROUTE_INDUCTION]
    it.domain_check, it.grid = "none", None  # the small dataset's domain holds no hot air
    res = it.advance(states)
    assert res.fallback.tolist() == [True, False, False]
    assert res.n_unresolved_steps == 1 and res.n_induction_steps == 2
    # The fresh cell got Cantera's step: what the fallback reactor gives it alone.
    t_c, y_c = it._cantera_step(float(fresh[0]), float(fresh[1]), torch.as_tensor(fresh[2:]))
    assert res.states[0, 0] == pytest.approx(t_c, abs=1e-9)
    np.testing.assert_allclose(res.states[0, 2:], y_c.numpy(), atol=1e-14)
    # Without the floor (the file as trained) the induction network takes it.
    plain = Integrator.load(models["both"], device="cpu")
    assert plain.induction_fallback_below == 0.0
    plain.route_below = plain.induction_route_below = np.inf
    plain.domain_check, plain.grid = "none", None
    assert plain.advance(states).n_unresolved_steps == 0


def test_fallback_below_is_for_an_induction_network_only(models, small_dataset, tmp_path):
    from kinetics.training.train import TrainConfig

    for bad, message in (({"fallback_below": 0.01}, "fallback_below: only an induction network"),
                         ({"fallback_below": -1, "regime": "induction", "tail_of": "x"},
                          "fallback_below: must be a number >= 0")):
        with pytest.raises(InputError, match=message):
            TrainConfig.from_dict(bad)
    cfg = tmp_path / "ind.yaml"
    cfg.write_text("model: {hidden: [8]}\nepochs: 1\nblock_rows: 2048\n"
                   "output_transform: {type: signed_power, lambda: 0.5}\nroute_below: 0.05\n"
                   f"tail_of: {models['tail']}\nregime: induction\nfallback_below: 0.02\n")
    out = tmp_path / "ind.safetensors"
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(out), "--device", "cpu",
                   "-q")
    assert proc.returncode == 0, proc.stderr
    meta, _, _ = read_model_file(out)
    assert meta.induction["fallback_below"] == 0.02
    assert Integrator.load(out, device="cpu").induction_fallback_below == 0.02


def _domain(key, value):
    return lambda raw: raw["domain"].__setitem__(key, value)


DOMAIN_EDITS = {
    "check": (_domain("check", "strict"), None, "domain.check must be one of occupancy, box, none"),
    "coordinates": (_domain("coordinates", ["temperature_k"]), None, "domain.coordinates must be"),
    "edges": (lambda raw: raw["domain"]["edges"][2].reverse(), None,
              "domain.edges (temperature_k) must be >= 2 increasing finite numbers"),
    "stoichiometry": (_domain("stoichiometric_mixture_fraction", 0.05), None,
                      "domain.stoichiometric_mixture_fraction is 0.05, its fuel and oxidiser give"),
    "fuel": (_domain("fuel", "CH4:1"), None, "domain.fuel/oxidizer are not streams of the mechanism"),
    "occupancy shape": (None, lambda t: t.__setitem__("domain.occupancy", t["domain.occupancy"][:-1]),
                        "tensor 'domain.occupancy' must be uint8"),
    "occupancy values": (None, lambda t: t.__setitem__("domain.occupancy", t["domain.occupancy"] * 3),
                         "tensor 'domain.occupancy' must hold 0 or 1 in every bin"),
    "no occupancy": (None, lambda t: t.pop("domain.occupancy"), "tensor 'domain.occupancy' is missing"),
    "in format 3": (lambda raw: raw.__setitem__("format_version", 3), None,
                    "domain needs format 4, the file is format 3"),
    "progress_below": (lambda raw: raw["induction"].__setitem__("progress_below", 0), None,
                       "induction.progress_below must lie in (0, 1], got 0"),
    "fallback_below": (lambda raw: raw["induction"].__setitem__("fallback_below", -0.5), None,
                       "induction.fallback_below must be a number >= 0, got -0.5"),
}


@pytest.mark.parametrize("case", list(DOMAIN_EDITS))
def test_inconsistent_format_4_metadata_is_one_line(models, tmp_path, case):
    meta_edit, tensor_edit, message = DOMAIN_EDITS[case]
    bad = rewrite_model_file(models["both"], tmp_path / "bad.safetensors", meta_edit, tensor_edit)
    with pytest.raises(InputError) as err:
        read_model_file(bad)
    text = str(err.value)
    assert text == text.splitlines()[0] and text.startswith(f"model: {bad}: ") and message in text


def test_older_formats_keep_their_box_check(models, tmp_path):
    def as_format_3(raw):
        raw["format_version"] = 3
        raw["domain"] = raw["induction"] = None

    old = rewrite_model_file(models["main"], tmp_path / "old.safetensors", as_format_3,
                   lambda t: t.pop("domain.occupancy"))
    meta, _, _ = read_model_file(old)
    assert meta.format_version == 3 and meta.domain is None
    it = Integrator.load(old, device="cpu")
    assert it.domain_check == "box" and it.grid is None
    new = Integrator.load(models["main"], device="cpu")
    gas = ct.Solution("h2o2.yaml")
    states = np.array([_state(gas, 1500.0, 1.0, NEXT_TO_NO_N2)])
    assert it.advance(states).n_fallback == 0 and new.advance(states).n_fallback == 1
    upgraded = dataclasses.replace(meta, format_version=4)
    assert upgraded.domain is None  # a format-4 file may still hold the box alone


def test_the_flame_ready_model_covers_a_counterflow_flame_it_was_not_trained_on():
    """The shipped flame-ready model: the cells of a counterflow flame between the recipe's fuel
    streams, pressures and strains (H2/N2 60/40 at 2 atm, strain 300/s) are inside its domain
    (the formats 1-3 box of the premixed h2-air model refuses most of them); hot H2/O2 without
    nitrogen and a hot unburnt mixture, which no row held, are outside."""
    from kinetics.model.registry import resolve_model
    from kinetics.validation.flame_coverage import counterflow_coverage

    flame = Integrator.load(resolve_model("h2-air-flame"), device="cpu")
    premixed = Integrator.load(resolve_model("h2-air"), device="cpu")
    new = counterflow_coverage(flame, "H2:0.6,N2:0.4", AIR, 2.0, 300.0)
    old = counterflow_coverage(premixed, "H2:0.6,N2:0.4", AIR, 2.0, 300.0)
    print(f"counterflow H2/N2 60/40, 2 atm, 300/s: flame-ready model serves "
          f"{100 * new.served_fraction:.1f} % of the non-frozen cells, h2-air "
          f"{100 * old.served_fraction:.1f} %")
    assert new.served_fraction >= 0.95 and new.zone_served_fraction >= 0.95
    assert old.served_fraction < 0.5
    gas = ct.Solution("h2o2.yaml")
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    never = np.array([_state(gas, 1500.0, 1.0, "H2:2,O2:1"), _state(gas, 2600.0, 5.0, gas.Y.copy())])
    x = torch.as_tensor(never)
    assert not flame.in_domain(x[:, 0], x[:, 1], box_cox(x[:, 2:], 0.1), x[:, 2:]).any()


def test_source_rows_trains_on_exactly_that_many_rows_of_each_source(small_dataset, tmp_path):
    """The seed paper's comparison trains on equal-sized mixes drawn from one dataset."""
    out = _train(small_dataset, tmp_path, "mix", "model: {hidden: [8]}\nepochs: 1\n"
                 "source_rows: {autoignition: 300, multiscale: 200}\ndomain: {check: none}\n")
    meta, tensors, _ = read_model_file(out)
    assert meta.training["rows_train"] + meta.training["rows_val"] == 500
    assert meta.domain["check"] == "none" and "domain.occupancy" not in tensors
    it = Integrator.load(out, device="cpu")
    gas = ct.Solution("h2o2.yaml")
    hot_no_n2 = np.array([_state(gas, 1500.0, 1.0, "H2:2,O2:1")])
    assert it.advance(hot_no_n2).n_fallback == 0  # check none: the network takes every cell
    cfg = tmp_path / "too-many.yaml"
    cfg.write_text("source_rows: {counterflow: 100000}\n")
    proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o", str(tmp_path / "x.safetensors"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and lines == [
        "error: source_rows.counterflow: 100000 rows asked for, the dataset holds 150"]


def test_the_standard_flames_follow_the_fuel():
    """`deepkin validate --flames` reads H2's flames for H2 (φ up to 3, three dilutions, strain
    up to 1000/s) and a natural-gas burner's for methane (φ 0.7-1.3, strain up to 300/s)."""
    from kinetics.validation.flame_coverage import diluted, standard_flames

    premixed, counterflow = standard_flames("H2:1")
    assert (3.0, 1.0) in premixed and ("H2:0.3,N2:0.7", 5.0, 1000.0) in counterflow
    assert len(premixed) == 8 and len(counterflow) == 12
    premixed, counterflow = standard_flames("CH4:1")
    assert sorted({phi for phi, _ in premixed}) == [0.7, 1.0, 1.3]
    assert {s for s, _, _ in counterflow} == {"CH4:1", "CH4:0.5,N2:0.5"}
    assert max(a for _, _, a in counterflow) == 300.0
    assert diluted("CH4:3,H2:1", 0.5) == "CH4:0.375,H2:0.125,N2:0.5"


def test_a_round_fine_tunes_every_network_on_other_rows(models, small_dataset, tmp_path):
    """``init_from`` + ``init_scales``: a round of the DAgger-like loop starts each of the three
    networks from the shipped model's on rows it was not trained on (here: another validation
    split, so other statistics). A learning rate too small to move the weights keeps them and
    their scales; the recorded ranges and occupancy domain are the union of both."""
    base_meta, base, _ = read_model_file(models["both"])
    still = "learning_rate: 1.0e-12\nval_fraction: 0.3\ninit_scales: true\n"
    main = _train(small_dataset, tmp_path, "main-r1",
                  TRAIN + still + f"init_from: {models['both']}\n")
    regime = ("model: {hidden: [8]}\nepochs: 1\nblock_rows: 2048\n"
              "output_transform: {type: signed_power, lambda: 0.5}\nroute_below: 0.05\n"
              + still + f"init_from: {models['both']}\n")
    tail = _train(small_dataset, tmp_path, "tail-r1", regime + f"tail_of: {main}\n")
    both = _train(small_dataset, tmp_path, "both-r1", regime + f"tail_of: {tail}\n"
                  "regime: induction\nprogress_below: 0.5\n")
    meta, tensors, _ = read_model_file(both)
    for prefix in ("", "tail.", "induction."):
        names = [k for k in base if k.startswith(prefix + "net.") or k.startswith(prefix + "norm.")]
        assert names
        for name in names:
            torch.testing.assert_close(tensors[name], base[name], rtol=0, atol=1e-6)
    assert meta.training["config"]["init_scales"] is True
    assert meta.tail["training"]["config"]["init_from"] == str(models["both"])
    # Other rows, other statistics: the same run without init_scales is refused by name.
    ours = read_model_file(_train(small_dataset, tmp_path, "fresh", TRAIN + "val_fraction: 0.3\n"))
    assert not torch.equal(ours[1]["norm.x_std"], base["norm.x_std"])
    united = base["domain.occupancy"].bool() | ours[1]["domain.occupancy"].bool()
    assert torch.equal(tensors["domain.occupancy"].bool(), united)
    assert meta.domain["domain_bins"] == int(united.sum())
    assert meta.domain["init_domain_bins"] == base_meta.domain["domain_bins"]
    assert meta.temperature_k[0] <= min(base_meta.temperature_k[0], ours[0].temperature_k[0])
    assert meta.temperature_k[1] >= max(base_meta.temperature_k[1], ours[0].temperature_k[1])
    cfg = tmp_path / "refused.yaml"
    for text, message in ((TRAIN + f"val_fraction: 0.3\ninit_from: {models['both']}\n",
                           r"init_from: .* was trained on other rows .* init_scales: true"),
                          (regime.replace(str(models["both"]), str(models["main"]))
                           + f"tail_of: {main}\n", r"init_from: .* has no tail network")):
        cfg.write_text(text)
        proc = run_cli("train", str(small_dataset), "-c", str(cfg), "-o",
                       str(tmp_path / "x.safetensors"), "--device", "cpu", "-q")
        assert proc.returncode == 1 and re.search(message, proc.stderr), proc.stderr
