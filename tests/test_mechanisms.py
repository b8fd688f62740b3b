"""mechanisms/: loading, hashing, lookups, compositions, and their errors (real Cantera)."""

from __future__ import annotations

import shutil

import cantera as ct
import numpy as np
import pytest

from mechanisms import InputError, load_mechanism, mixture_mass_fractions, parse_composition
from mechanisms.loading import mechanism_sha256, shipped_mechanisms, solution_from_yaml
from mechanisms.state import column_names, set_gas_state, state_of_gas


def test_shipped_name_and_path_give_the_same_hash(tmp_path):
    by_name = load_mechanism("h2o2.yaml")
    copy = tmp_path / "copy.yaml"
    shutil.copyfile(next(p for p in (f"{d}/h2o2.yaml" for d in ct.get_data_directories())
                         if __import__("os").path.isfile(p)), copy)
    by_path = load_mechanism(str(copy))
    assert by_name.sha256 == by_path.sha256 == mechanism_sha256(by_name.yaml_text)
    assert len(by_name.sha256) == 64
    crlf = tmp_path / "crlf.yaml"
    crlf.write_bytes(by_name.yaml_text.replace("\n", "\r\n").encode())
    assert load_mechanism(str(crlf)).sha256 == by_name.sha256
    assert by_name.phase == "ohmech"
    assert by_name.species_names[:2] == ["H2", "H"]
    assert by_name.species_index("N2") == 9
    assert by_name.element_index("O") == by_name.element_names.index("O")


def test_phase_selection_and_refusals():
    mech = load_mechanism("nDodecane_Reitz.yaml", "nDodecane_IG")
    assert "c12h26" in mech.species_names
    with pytest.raises(InputError, match="not an ideal gas.*nDodecane_IG"):
        load_mechanism("nDodecane_Reitz.yaml")
    with pytest.raises(InputError, match="phase: 'nope' is not a phase.*ohmech"):
        load_mechanism("h2o2.yaml", "nope")
    with pytest.raises(InputError, match="not found"):
        load_mechanism("no-such-mechanism.yaml")
    with pytest.raises(InputError, match="unknown species 'XX'"):
        load_mechanism("h2o2.yaml").species_index("XX")
    assert "gri30.yaml" in shipped_mechanisms()


def test_broken_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases:\n- name: gas\n  thermo: ideal-gas\n  species: [{nothere: all}]\n")
    with pytest.raises(InputError) as err:
        load_mechanism(str(bad))
    assert "\n" not in str(err.value) and "bad.yaml" in str(err.value)


def test_composition_parsing_and_mixtures():
    mech = load_mechanism("h2o2.yaml")
    names = mech.species_names
    assert parse_composition("O2:1, N2:3.76", names) == {"O2": 1.0, "N2": 3.76}
    assert parse_composition("H2", names) == {"H2": 1.0}
    for text, message in (("h2:1", "case-sensitive"), ("O2:x", "not a number"),
                          ("O2:-1", ">= 0"), ("O2:1,O2:2", "twice"), ("", "empty"),
                          ("O2:0", "all amounts are zero")):
        with pytest.raises(InputError, match=message):
            parse_composition(text, names, "oxidizer")
    gas = mech.solution()
    y = mixture_mass_fractions(gas, "H2:1", "O2:1,N2:3.76", 1.0)
    # Stoichiometric H2/air: X_H2 = 2/(2 + 4.76).
    gas.TPY = 300, ct.one_atm, y
    assert gas["H2"].X[0] == pytest.approx(2 / 6.76, rel=1e-12)
    lean = mixture_mass_fractions(gas, "H2:1", "O2:1,N2:3.76", 0.5)
    assert lean[names.index("H2")] < y[names.index("H2")]
    with pytest.raises(InputError, match="phi"):
        mixture_mass_fractions(gas, "H2:1", "O2:1,N2:3.76", -1.0)


def test_solution_cache_and_state_layout():
    mech = load_mechanism("h2o2.yaml")
    assert solution_from_yaml(mech.yaml_text, mech.phase) is mech.solution()
    gas = mech.solution()
    row = np.zeros(12)
    row[:2] = 1500.0, 2 * ct.one_atm
    row[2 + mech.species_index("H2")] = 0.5
    row[2 + mech.species_index("O2")] = 1.5
    set_gas_state(gas, row)
    back = state_of_gas(gas)
    assert back[0] == pytest.approx(1500.0) and back[1] == pytest.approx(2 * ct.one_atm)
    assert back[2:].sum() == pytest.approx(1.0)
    assert column_names(mech.species_names)[:3] == ["T", "P", "H2"]
