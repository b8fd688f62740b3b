"""Sampling what flames visit: several counterflow fuel streams in one run, strain sweeps to
extinction, free flames over their own φ, pressures and transport models; and the domain
coordinates (Bilger mixture fraction, dilution, progress) with the occupancy grid built on them.
Real Cantera, real `deepkin sample` runs."""

from __future__ import annotations

import json

import cantera as ct
import h5py
import numpy as np
import pytest
import torch

from kinetics.model.domain import DomainCoordinates, DomainSettings, OccupancyGrid
from mechanisms import InputError
from mechanisms.dataset_file import read_dataset
from sampling.config import SamplingConfig
from sampling.manifold import _counterflow_flame, _scale_counterflow, counterflow_sweep
from tests.conftest import run_cli

AIR = "O2:1,N2:3.76"


def _y(gas: ct.Solution, composition: str) -> np.ndarray:
    gas.TPX = 300.0, ct.one_atm, composition
    return gas.Y.copy()


def test_strain_sweep_ends_close_to_extinction():
    """The strain rises flame by flame and the peak temperature falls; the last flame still
    burns, and 1.5 × its strain, solved from it, no longer does."""
    gas = ct.Solution("h2o2.yaml")
    fuel, air = _y(gas, "H2:0.3,N2:0.7"), _y(gas, AIR)
    flames = counterflow_sweep(gas, fuel, air, ct.one_atm, 50.0, width_m=0.03, factor=2.0,
                               tolerance=0.05)
    strains = [f[0] for f in flames]
    peaks = [f[2][:, 0].max() for f in flames]
    assert len(flames) >= 5 and strains[0] == 50.0
    assert all(b > a for a, b in zip(strains, strains[1:]))
    assert all(b < a for a, b in zip(peaks, peaks[1:]))  # strain cools the flame
    assert peaks[-1] > 700.0 and peaks[0] - peaks[-1] > 300.0  # burning, but much cooler
    # Rebuild the last flame along the same path, then push it 50 % further: it goes out.
    flame = _counterflow_flame(gas, fuel, air, ct.one_atm, 50.0, 300.0, 300.0, 0.03)
    for a, b in zip(strains, strains[1:]):
        _scale_counterflow(flame, b / a)
        flame.solve(loglevel=0, auto=False)
    assert flame.T.max() == pytest.approx(peaks[-1], abs=2.0)
    _scale_counterflow(flame, 1.5)
    try:
        flame.solve(loglevel=0, auto=False)
        extinct = flame.T.max() < 700.0
    except ct.CanteraError:
        extinct = True
    assert extinct, "the sweep stopped short of extinction"


def test_several_fuel_streams_transports_and_per_source_grids_in_one_run(tmp_path):
    cfg = tmp_path / "flames.yaml"
    cfg.write_text(f"""mechanism: h2o2.yaml
fuel: "H2:1"
oxidizer: "{AIR}"
phi: [1.0]
temperature_k: [1100]
pressure_atm: [1]
seed: 3
rows: {{autoignition: 100, free_flame: 200, counterflow: 400, multiscale: 0, perturbed: 0,
        emcs: 0, equilibrium: 0}}
free_flame: {{phi: [0.5, 3.0], pressure_atm: [2], transport: [mixture-averaged, unity-Lewis-number]}}
counterflow: {{fuels: ["H2:1", "H2:0.3,N2:0.7"], pressure_atm: [1], to_extinction: true,
              strain_rate_s: [50], width_m: 0.03}}
""")
    out = tmp_path / "flames.h5"
    proc = run_cli("sample", "-c", str(cfg), "-o", str(out), "--workers", "0", "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    inputs, _, source = read_dataset(out)
    with h5py.File(out, "r") as h5:
        config = json.loads(h5.attrs["sampler_config"])
        tasks = [t.decode() for t in h5["tasks/id"][:]]
    assert config["counterflow"]["fuels"] == ["H2:1", "H2:0.3,N2:0.7"]
    assert sum(t.startswith("r0/free_flame/") for t in tasks) == 4  # 2 φ × 2 transports, 2 atm
    assert sum(t.startswith("r0/counterflow/") for t in tasks) == 2  # one sweep per fuel stream
    gas = ct.Solution("h2o2.yaml")
    n2 = gas.species_index("N2")
    flames = inputs[source == 1]
    assert np.allclose(flames[:, 1], 2 * ct.one_atm)
    counterflow = inputs[source == 2]
    assert len(counterflow) == 400 and np.allclose(counterflow[:, 1], ct.one_atm)
    # Both fuel streams are in the counterflow rows: pure-H2 side (no N2) and the diluted side.
    assert counterflow[:, 2 + n2].min() < 0.05 and counterflow[:, 2 + n2].max() > 0.9
    assert counterflow[:, 0].max() > 1500.0


@pytest.mark.parametrize("section,message", [
    ("free_flame: {transport: [mixture]}", "free_flame.transport: unknown transport model 'mixture'"),
    ("free_flame: {pressure_atm: [1e6]}", "free_flame.pressure_atm: 1e+06 atm lies outside"),
    ("counterflow: {sweep_factor: 1.0}", "counterflow.sweep_factor: must be a number > 1"),
    ("counterflow: {extinction_tolerance: 0}", "counterflow.extinction_tolerance: must lie in (0, 1)"),
    ("counterflow: {fuels: 'H2:1'}", "counterflow.fuels: expected a list of compositions"),
    ("counterflow: {fuels: ['H2:1', 'XX:1']}", "counterflow.fuels[1]: unknown species 'XX'"),
])
def test_bad_flame_settings_are_one_line(tmp_path, section, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(section + "\n")
    proc = run_cli("sample", "-c", str(cfg), "-o", str(tmp_path / "x.h5"), "--workers", "0", "-q")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_config_defaults_keep_one_grid_for_every_source():
    cfg = SamplingConfig()
    assert cfg.free_flame_phis == cfg.phi and cfg.free_flame_pressures_atm == cfg.pressure_atm
    assert cfg.counterflow_fuels == [cfg.fuel] and cfg.counterflow_pressures_atm == cfg.pressure_atm
    assert cfg.free_flame.transport == ["mixture-averaged"] and not cfg.counterflow.to_extinction


def test_mixture_fraction_dilution_and_progress():
    gas = ct.Solution("h2o2.yaml")
    coords = DomainCoordinates(gas, "H2:1", AIR)

    def at(composition_or_y, t=300.0, equilibrate=False):
        if isinstance(composition_or_y, str):
            gas.TPX = t, ct.one_atm, composition_or_y
        else:
            gas.TPY = t, ct.one_atm, composition_or_y
        if equilibrate:
            gas.equilibrate("HP")
        y = torch.as_tensor(gas.Y[None, :])
        return coords.coordinates(torch.tensor([gas.T]), torch.tensor([gas.P]), y)[0].numpy()

    fuel, air = at("H2:1"), at(AIR)
    assert fuel[0] == pytest.approx(1.0 / (1.0 + coords.stoichiometric))  # Z = 1
    assert air[0] == 0.0 and air[1] == pytest.approx(0.767, abs=0.001) and fuel[1] == 0.0
    gas.set_equivalence_ratio(1.0, "H2:1", AIR)
    stoich = gas.Y.copy()
    assert at(stoich)[0] == pytest.approx(0.5, abs=1e-9)  # s = 1/2 at stoichiometry
    assert coords.stoichiometric == pytest.approx(0.0285, abs=2e-4)
    # fresh: 0; burnt from 1200 K (about 3000 K, much dissociated): well above 1/2
    assert at(stoich)[4] == 0.0 and at(stoich, 1200.0, equilibrate=True)[4] > 0.75
    gas.set_equivalence_ratio(0.5, "H2:1", AIR)
    assert at(gas.Y.copy(), 300.0, equilibrate=True)[4] > 0.99  # lean burnt gas: all H in H2O
    diluted = at("H2:0.3,N2:0.7")
    assert diluted[1] == pytest.approx(0.970, abs=0.002)
    assert 0.5 < diluted[0] < 0.7  # the diluted fuel stream is a rich mixture of H2 and air's Z
    with pytest.raises(InputError, match="no mixture fraction between them"):
        DomainCoordinates(gas, "O2:1", AIR)  # a "fuel" that brings oxygen


def test_occupancy_grid_counts_dilates_and_refuses_beyond_its_edges():
    settings = DomainSettings.from_dict({"mixture_bins": 4, "diluent_bins": 2, "progress_bins": 2,
                                         "temperature_range_k": [300, 700],
                                         "temperature_step_k": 100,
                                         "pressure_range_atm": [1, 2.25], "pressure_factor": 1.5,
                                         "min_rows": 2})
    grid = OccupancyGrid(settings.edges())
    assert grid.shape == (4, 2, 4, 2, 2)
    one_atm = 0.0
    rows = torch.tensor([[0.1, 0.2, 350.0, one_atm, 0.1]] * 2 + [[0.9, 0.9, 650.0, 0.5, 0.9]],
                        dtype=torch.float64)
    counts = grid.count(rows)
    assert int(counts.sum()) == 3
    tight = grid.mask(counts, min_rows=2, dilate=0)
    assert int(tight.sum()) == 1  # the bin with one row is below min_rows
    wide = grid.mask(counts, min_rows=2, dilate=1)
    assert int(wide.sum()) == 2 * 2 * 2 * 2 * 2  # its neighbours along every axis (clipped)
    probe = torch.tensor([[0.1, 0.2, 350.0, 0.0, 0.1], [0.3, 0.2, 450.0, 0.0, 0.1],
                          [0.6, 0.2, 350.0, 0.0, 0.1], [0.1, 0.2, 950.0, 0.0, 0.1],
                          [1.0, 1.0, 700.0, float(np.log(2.25)), 1.0]], dtype=torch.float64)
    flat, inside = grid.flat_index(probe)
    assert inside.tolist() == [True, True, True, False, True]  # 950 K lies beyond the edges
    covered = wide.reshape(-1).bool()[flat] & inside
    assert covered.tolist() == [True, True, False, False, False]
    for bad, message in (({"check": "maybe"}, "domain.check: must be one of"),
                         ({"min_rows": 0}, "domain.min_rows: must be a whole number >= 1"),
                         ({"dilate": -1}, "domain.dilate: must be a whole number >= 0"),
                         ({"pressure_factor": 1.0}, "domain.pressure_factor: must be a number > 1"),
                         ({"temperature_range_k": [900, 300]}, "domain.temperature_range_k"),
                         ({"bins": 3}, "domain.bins: unknown key")):
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            DomainSettings.from_dict(bad)
