"""The dataset a `deepkin sample` run writes: schema, labels, coverage (real Cantera + HDF5)."""

from __future__ import annotations

import json

import cantera as ct
import h5py
import numpy as np

from mechanisms import load_mechanism
from mechanisms.dataset_file import SOURCE_NAMES, read_dataset, summarise_dataset
from mechanisms.reactor import LABEL_TOLERANCES
from tests.conftest import run_cli

MINOR = ["H", "O", "OH", "HO2", "H2O2"]


def test_schema_and_attributes(small_dataset):
    mech = load_mechanism("h2o2.yaml")
    with h5py.File(small_dataset, "r") as h5:
        a = h5.attrs
        assert a["schema_version"] == 1
        assert a["mechanism_sha256"] == mech.sha256
        assert a["phase_name"] == "ohmech"
        assert json.loads(a["species_names"]) == mech.species_names
        assert a["dt"] == 1e-6
        assert a["reactor"].startswith("IdealGasConstPressureReactor")
        assert (a["rtol"], a["atol"]) == (LABEL_TOLERANCES.rtol, LABEL_TOLERANCES.atol)
        assert json.loads(a["source_names"]) == list(SOURCE_NAMES)
        assert bool(a["complete"])
        assert a["cantera_version"] == ct.__version__
        config = json.loads(a["sampler_config"])
        assert config["seed"] == 7 and config["rows"]["multiscale"] == 2400
        runs = json.loads(a["runs"])
        assert len(runs) == 1 and runs[0]["complete"] and "ranges" in runs[0]
        assert h5["mechanism_yaml"].asstr()[()] == mech.yaml_text
        n = h5["inputs"].shape[0]
        for name in ("inputs", "targets"):
            ds = h5[name]
            assert ds.dtype == np.float64 and ds.shape == (n, 12) and ds.maxshape == (None, 12)
            assert ds.compression == "gzip" and ds.shuffle
            assert ds.chunks[0] * 12 * 8 <= 1 << 20
        assert h5["source"].dtype == np.uint8 and h5["source"].shape == (n,)
        assert int(h5["tasks/rows"][...].sum()) == n
        ids = h5["tasks/id"].asstr()[...]
        assert len(set(ids)) == len(ids)
    inputs, targets, source = read_dataset(small_dataset)
    assert 4300 <= len(inputs) <= 5200
    counts = np.bincount(source, minlength=len(SOURCE_NAMES))
    assert counts[SOURCE_NAMES.index("autoignition")] == 1200
    assert counts[SOURCE_NAMES.index("multiscale")] == 2400
    assert counts[SOURCE_NAMES.index("free_flame")] > 0
    assert counts[SOURCE_NAMES.index("counterflow")] > 0
    assert counts[SOURCE_NAMES.index("emcs")] > 0
    assert counts[SOURCE_NAMES.index("equilibrium")] == 300
    assert np.all(np.isfinite(inputs)) and np.all(np.isfinite(targets))
    np.testing.assert_allclose(inputs[:, 2:].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(targets[:, 2:].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(inputs[:, 1], targets[:, 1], rtol=1e-12)  # constant pressure


def test_labels_match_an_independent_cantera_step(small_dataset):
    inputs, targets, _ = read_dataset(small_dataset)
    rng = np.random.default_rng(0)
    gas = ct.Solution("h2o2.yaml")
    for i in rng.choice(len(inputs), 50, replace=False):
        gas.TPY = inputs[i, 0], inputs[i, 1], inputs[i, 2:]
        reactor = ct.IdealGasConstPressureReactor(gas, clone=True)
        net = ct.ReactorNet([reactor])
        net.rtol, net.atol = 1e-12, 1e-22
        net.advance(1e-6)
        t_ref = reactor.phase.T
        y_ref = reactor.phase.Y
        # within the label tolerances' error (docs/sampling.md, "Label tolerances")
        assert abs(targets[i, 0] - t_ref) <= 10 * LABEL_TOLERANCES.rtol * t_ref, (i, targets[i, 0], t_ref)
        assert np.max(np.abs(targets[i, 2:] - y_ref)) <= LABEL_TOLERANCES.rtol, i


def _decades_at_fixed_temperature(states: np.ndarray, column: int, share: float = 0.01) -> float:
    """Decades of log10(Y) holding ≥ ``share`` of the rows (and ≥ 2 rows), counted within each
    200 K temperature band with ≥ 30 rows and averaged over the bands.

    A manifold is a set of curves in (T, Y) space: at a given temperature its Y spans few decades.
    Multi-scale data fills the (T, log Y) box, which is what this histogram measures.
    """
    counts = []
    for t_lo in range(300, 3500, 200):
        band = states[(states[:, 0] >= t_lo) & (states[:, 0] < t_lo + 200)]
        if len(band) < 30:
            continue
        hist, _ = np.histogram(np.log10(band[:, column] + 1e-30), bins=np.arange(-30, 1))
        counts.append(int((hist >= max(2, share * len(band))).sum()))
    return float(np.mean(counts))


def test_multiscale_widens_minor_species_coverage(small_dataset):
    names = load_mechanism("h2o2.yaml").species_names
    manifold, _, _ = read_dataset(small_dataset, ("autoignition", "free_flame", "counterflow"))
    multiscale, _, _ = read_dataset(small_dataset, ("multiscale",))
    for species in MINOR:
        k = 2 + names.index(species)
        before = _decades_at_fixed_temperature(manifold, k)
        after = _decades_at_fixed_temperature(multiscale, k)
        assert after - before >= 8, (species, before, after)
        # the draw reaches down to the widened lower bound (1e-27 here: manifold zeros − 2 decades)
        assert multiscale[:, k].min() < 1e-24


def test_dataset_info_cli(small_dataset):
    proc = run_cli("dataset", "info", str(small_dataset), check=True)
    assert "autoignition" in proc.stdout and "1200" in proc.stdout
    assert "complete" in proc.stdout and "1e-06 s" in proc.stdout and "HO2" in proc.stdout
    proc = run_cli("dataset", "info", "--json", str(small_dataset), check=True)
    data = json.loads(proc.stdout)
    summary = summarise_dataset(small_dataset)
    assert data["n_rows"] == summary.n_rows == sum(data["rows_per_source"].values())
    assert data["species"][0] == "H2"
    assert 299.9 <= data["temperature_k"][0] < data["temperature_k"][1] < 3500.0


def test_equilibrium_rows_bracket_equilibrium_and_relax_towards_it(small_dataset):
    inputs, targets, source = read_dataset(small_dataset)
    rows = np.flatnonzero(source == SOURCE_NAMES.index("equilibrium"))
    gas = ct.Solution("h2o2.yaml")
    offsets, gaps, gains = [], [], []
    for i in rows[:120]:
        gas.TPY = targets[i, 0], targets[i, 1], targets[i, 2:]
        s_label = gas.entropy_mass
        gas.TPY = inputs[i, 0], inputs[i, 1], inputs[i, 2:]
        s_state = gas.entropy_mass
        gas.equilibrate("HP")
        offsets.append(inputs[i, 0] - gas.T)
        gaps.append(gas.entropy_mass - s_state)
        gains.append(s_label - s_state)
    offsets, gaps, gains = np.array(offsets), np.array(gaps), np.array(gains)
    # Both sides of equilibrium in temperature, many of them close to it.
    assert (offsets > 1.0).sum() >= 20 and (offsets < -1.0).sum() >= 20
    assert (np.abs(offsets) < 20.0).mean() >= 0.3
    # Second law at fixed h and P: every state lies below the equilibrium entropy, and its label
    # (one adiabatic constant-pressure step) has gained entropy, i.e. it relaxes towards it.
    assert (gaps >= -1e-6).all()
    assert (gains >= -1e-6).all() and (gains > 0).mean() >= 0.9


def _fresh_h2_air() -> tuple[ct.Solution, np.ndarray]:
    """h2o2.yaml set to fresh stoichiometric H2/air at 1200 K, 1 atm, and that state ``[1, 12]``."""
    gas = ct.Solution("h2o2.yaml")
    gas.TP = 1200.0, ct.one_atm
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    return gas, np.concatenate([[gas.T, gas.P], gas.Y])[None, :]


def _assert_same_enthalpy_and_elements(gas: ct.Solution, base: np.ndarray, drawn: np.ndarray,
                                       atol: float) -> None:
    """Every drawn row has ``base``'s enthalpy and element mass fractions (to ``atol``)."""
    gas.TPY = base[0, 0], base[0, 1], base[0, 2:]
    h0 = gas.enthalpy_mass
    z0 = [gas.elemental_mass_fraction(e) for e in gas.element_names]
    for row in drawn:
        gas.TPY = row[0], row[1], row[2:]
        assert abs(gas.enthalpy_mass - h0) <= 1e-6 * abs(h0) + 1e-3
        z = [gas.elemental_mass_fraction(e) for e in gas.element_names]
        np.testing.assert_allclose(z, z0, atol=atol)


def test_equilibrium_draws_keep_elements_and_enthalpy_of_their_base_state():
    from sampling.equilibrium import draw_equilibrium_approach

    gas, base = _fresh_h2_air()
    drawn = draw_equilibrium_approach(gas, base, 60, np.random.default_rng(1))
    assert drawn.shape == (60, 12)
    gas.equilibrate("HP")
    t_eq = gas.T
    _assert_same_enthalpy_and_elements(gas, base, drawn, atol=1e-12)
    assert (drawn[:, 0] > t_eq + 0.1).any() and (drawn[:, 0] < t_eq - 0.1).any()


def test_spread_equilibrium_draws_leave_the_line_but_keep_enthalpy_and_elements():
    """With ``spread`` each species takes its own fraction of the way to equilibrium (a
    surrogate's burnt gas, whose H/O pool has relaxed ahead of the rest); the element composition
    is restored and the enthalpy is the base state's."""
    from sampling.equilibrium import draw_equilibrium_approach

    gas, base = _fresh_h2_air()
    gas.equilibrate("HP")
    y_eq = gas.Y.copy()
    gap = base[0, 2:] - y_eq
    drawn = draw_equilibrium_approach(gas, base, 80, np.random.default_rng(2), spread=1.0,
                                      beyond_fraction=0.0)
    assert len(drawn) == 80
    moving = np.abs(gap) > 1e-4  # H2, O2, H2O and the radicals
    fractions = (drawn[:, 2:] - y_eq)[:, moving] / gap[moving]
    spread_between_species = fractions.max(axis=1) - fractions.min(axis=1)
    assert np.median(spread_between_species) > 0.05  # off the line (0 on it)
    assert (drawn[:, 2:] >= 0).all()
    _assert_same_enthalpy_and_elements(gas, base, drawn, atol=1e-10)
