"""`deepkin reduce` as a user runs it: a real subprocess, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE = {"model": "gri30.yaml", "targets": ["CH4", "O2"], "retained-species": ["N2"], "method": "DRGEP",
        "error": 5.0, "autoignition-conditions": [
            {"kind": "constant volume", "pressure": 1.0, "temperature": 1400.0, "equivalence-ratio": 1.0,
             "fuel": {"CH4": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}]}


def reduce_cli(tmp_path: Path, data: dict | str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "reduce.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "DEEPKIN_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "deepkin", "reduce", "-i", str(path), "-o",
                           str(tmp_path / "out"), "--workers", "0", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def variant(**changes) -> dict:
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        key = key.replace("_", "-")
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def condition(**changes) -> list[dict]:
    cond = dict(BASE["autoignition-conditions"][0])
    for key, value in changes.items():
        cond[key.replace("_", "-")] = value
    return [cond]


CASES = {
    "unknown key": (variant(retained_specie=["N2"]),
                    "retained-specie: unknown key (did you mean 'retained-species'?)"),
    "unknown condition key": (variant(autoignition_conditions=condition(temperatur=1200.0)),
                              "did you mean 'temperature'?"),
    "unknown retained species": (variant(retained_species=["N3"]),
                                 "retained-species: species 'N3' is not in"),
    "target the mechanism lacks": (variant(targets=["C12H26"]),
                                   "targets: species 'C12H26' is not in gri30.yaml"),
    "wrong-case species": (variant(targets=["ch4"]), "did you mean 'CH4'?"),
    "zero error bound": (variant(error=0), "error: the error bound must be a number > 0"),
    "negative error bound": (variant(error=-5), "error: the error bound must be a number > 0"),
    "unknown fuel species": (variant(autoignition_conditions=condition(fuel={"CH5": 1.0})),
                             "unknown species 'CH5'"),
    "unknown kind": (variant(autoignition_conditions=condition(kind="constant volumes")),
                     "did you mean 'constant volume'?"),
    "no ignition in the detailed model": (
        variant(autoignition_conditions=condition(temperature=500.0, end_time=0.01)),
        "the detailed mechanism does not ignite at 'cv T0=500 K P=1 atm phi=1'"),
    "unknown method": (variant(method="pfa2"), "method: unknown method 'pfa2'"),
    "missing model": (variant(model=None), "model: missing"),
    "unknown model": (variant(model="gri31.yaml"), "mechanism: 'gri31.yaml' not found"),
    "not yaml": ("model: [gri30.yaml\n", "is not valid YAML"),
    "old equilibrium key": (variant(equilibrium_error_k=10.0),
                            "equilibrium-error-k: replaced by equilibrium-error, in percent"),
    "zero equilibrium bound": (variant(equilibrium_error=0),
                               "equilibrium-error: the error bound must be a number > 0"),
    "unknown target weight": (variant(weights={"ignition": 1.0}),
                              "weights.ignition: unknown target (did you mean 'ignition-delay'?)"),
    "misspelt sensitivity type": (variant(sensitivity_analysis=True, sensitivity_type="greddy"),
                                  "sensitivity-type: use 'greedy' or 'initial', got 'greddy' "
                                  "(did you mean 'greedy'?)"),
    "sensitivity analysis after deepmr": (variant(method="deepmr", sensitivity_analysis=True),
                                          "sensitivity-analysis: follows a graph method"),
    "target weights of the wrong length": (
        variant(autoignition_conditions=condition(target_weights=[1.0])),
        "autoignition-conditions[1].target-weights: expected a list of 2 weights"),
    "flame bound without flames": (variant(laminar_flame_error=5.0),
                                   "laminar-flame-error: there are no laminar-flame-conditions to bound"),
    "misspelt psr key": (variant(psr_conditions=[{"pressure": 1.0, "temperature": 300.0,
                                                  "residence-tme": 0.1, "reactants": {"CH4": 1, "O2": 2}}]),
                         "psr-conditions[1].residence-tme: unknown key (did you mean 'residence-time'?)"),
    "a flame that is not premixed": (variant(laminar_flame_conditions=[
        {"kind": "diffusion", "pressure": 1.0, "temperature": 300.0, "reactants": {"CH4": 1, "O2": 2}}]),
        "laminar-flame-conditions[1].kind: a laminar flame is 'premixed'"),
    "a flame without transport data": (
        {"model": "nDodecane_Reitz.yaml", "phase-name": "nDodecane_IG", "error": 10.0,
         "laminar-flame-conditions": [{"pressure": 1.0, "temperature": 400.0,
                                       "reactants": {"c12h26": 1, "o2": 18.5, "n2": 69.6}}]},
        "laminar-flame-conditions: nDodecane_Reitz.yaml has no transport data"),
    "a stirred reactor that cannot burn": (
        variant(autoignition_conditions=None, psr_conditions=[
            {"pressure": 1.0, "temperature": 300.0, "residence-time": 1e-7, "equivalence-ratio": 1.0,
             "fuel": {"CH4": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}]),
        "the detailed mechanism does not burn or never goes out at 'psr T0=300 K P=1 atm phi=1'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(tmp_path, name):
    data, expected = CASES[name]
    proc = reduce_cli(tmp_path, data)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_method_choices_are_the_registry():
    from deepkin.cli import reduce_cmd
    from mechanisms.reduction import METHODS

    option = next(p for p in reduce_cmd.params if p.name == "method")
    assert list(option.type.choices) == list(METHODS)


def test_workers_and_scheduler_exclude_each_other(tmp_path):
    proc = reduce_cli(tmp_path, BASE, "--scheduler", "tcp://127.0.0.1:1")
    assert proc.returncode == 1 and "exclude each other" in proc.stderr


def test_reduce_command_writes_outputs_and_reuses_the_cache(tmp_path):
    first = reduce_cli(tmp_path, BASE, "-q")
    assert first.returncode == 0, first.stderr
    assert "drgep: 53 →" in first.stdout and "bound by " in first.stdout
    out = tmp_path / "out"
    summary = json.loads((out / "drgep-summary.json").read_text())
    assert summary["verification"]["passed"] and not summary["reference"]["cached"]
    assert {p.name for p in out.iterdir()} >= {"drgep.yaml", "drgep-report.md", "drgep-summary.json",
                                               "drgep-ignition.png", "drgep-candidates.png", "drgep.inp",
                                               "drgep-thermo.dat", "drgep-transport.dat"}
    again = reduce_cli(tmp_path, BASE, "--method", "drg", "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "drg-summary.json").read_text())["reference"]["cached"]
