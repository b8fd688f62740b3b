"""What a reduction writes, read back by the tools users read it with: Cantera (the YAML), Cantera's
``ck2yaml`` and OpenFOAM's ``chemkinToFoam`` (the Chemkin files), and the candidates plot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cantera as ct
import pytest

from mechanisms.reduction import parse_reduce_config, run_condition, run_reduction

H2_AIR = {"fuel": {"H2": 1.0}, "oxidizer": {"O2": 1.0, "N2": 3.76}}
FOAM_CONTROL_DICT = """FoamFile
{
    version 2.0;
    format ascii;
    class dictionary;
    object controlDict;
}
application chemkinToFoam;
"""
FOAM_TRANSPORT = """FoamFile
{
    version 2.0;
    format ascii;
    class dictionary;
    object transportProperties;
}
".*"
{
    transport
    {
        As 1.67212e-6;
        Ts 170.672;
    }
}
"""


@pytest.fixture(scope="module")
def reduced(tmp_path_factory) -> dict:
    """DRGEP on h2o2.yaml keeping AR (its element is spelt 'Ar': a case chemkinToFoam refuses)."""
    out = tmp_path_factory.mktemp("out")
    config = parse_reduce_config({
        "model": "h2o2.yaml", "targets": ["H2", "O2"], "retained-species": ["AR"], "method": "drgep",
        "error": 10.0, "autoignition-conditions": [
            {"kind": "constant pressure", "temperature": [1000.0, 1200.0], "pressure": 1.0,
             "equivalence-ratio": 1.0, **H2_AIR}]})
    summary = run_reduction(config, out, workers=0, progress=False, cache_dir=out / "cache")
    return {"summary": summary, "config": config, "out": out}


def test_chemkin_files_round_trip_through_ck2yaml(reduced, tmp_path):
    summary, config = reduced["summary"], reduced["config"]
    files = summary["reduced"]["chemkin"]
    assert set(files) == {"mechanism", "thermo", "transport"}
    mech = Path(files["mechanism"]).read_text()
    thermo = Path(files["thermo"]).read_text()
    elements = mech.split("ELEM", 1)[1].split("END", 1)[0].split()
    assert "REACTIONS CAL/MOLE MOLES" in mech and "AR" in elements and "Ar" not in elements
    assert "THERMO ALL\n   200.000  1000.000  " in thermo
    assert mech.isascii() and thermo.isascii()
    out = tmp_path / "round-trip.yaml"
    proc = subprocess.run([sys.executable, "-m", "cantera.ck2yaml", f"--input={files['mechanism']}",
                           f"--thermo={files['thermo']}", f"--transport={files['transport']}",
                           f"--output={out}", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    back = ct.Solution(str(out))
    written = ct.Solution(summary["reduced"]["path"])
    assert back.species_names == written.species_names and back.n_reactions == written.n_reactions
    assert back.transport_model == "mixture-averaged"
    cond = config.conditions[0]
    assert run_condition(back, cond, config.simulation).value == pytest.approx(
        run_condition(written, cond, config.simulation).value, rel=1e-6)


def openfoam_project() -> Path | None:
    """OpenFOAM's project directory when ``chemkinToFoam`` can run here, else None."""
    root = Path(os.environ.get("WM_PROJECT_DIR") or "/usr/share/openfoam")
    if shutil.which("chemkinToFoam") and (root / "etc" / "controlDict").is_file():
        return root
    return None


def test_chemkin_files_load_in_chemkintofoam(reduced, tmp_path):
    root = openfoam_project()
    if root is None:
        if os.environ.get("DEEPKIN_REQUIRE_OPENFOAM") == "1":
            pytest.fail("DEEPKIN_REQUIRE_OPENFOAM=1 but OpenFOAM's chemkinToFoam is not installed")
        pytest.skip("OpenFOAM's chemkinToFoam is not installed (CI installs it and sets "
                    "DEEPKIN_REQUIRE_OPENFOAM=1)")
    files = reduced["summary"]["reduced"]["chemkin"]
    case = tmp_path / "case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text(FOAM_CONTROL_DICT)
    # chemkinToFoam's third argument is an OpenFOAM dictionary of Sutherland coefficients
    (tmp_path / "transportProperties").write_text(FOAM_TRANSPORT)
    proc = subprocess.run(["chemkinToFoam", files["mechanism"], files["thermo"],
                           str(tmp_path / "transportProperties"), str(tmp_path / "reactions"),
                           str(tmp_path / "thermo")], cwd=case, capture_output=True, text=True,
                          env={**os.environ, "WM_PROJECT_DIR": str(root)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = ct.Solution(reduced["summary"]["reduced"]["path"])
    reactions = (tmp_path / "reactions").read_text()
    assert reactions.count("Reaction;") == written.n_reactions
    entries = {line for line in (tmp_path / "thermo").read_text().splitlines() if line and line[0] != " "}
    assert set(written.species_names) <= entries


def test_candidates_plot_and_binding_in_the_outputs(reduced):
    summary, out = reduced["summary"], reduced["out"]
    assert (out / "drgep-candidates.png").read_bytes()[:4] == b"\x89PNG"
    written = json.loads((out / "drgep-summary.json").read_text())
    assert written["binding"]["bound_by"] in written["bounds_percent"]
    assert written["binding"]["smaller_tried"] >= 1
    report = (out / "drgep-report.md").read_text()
    assert "- bound by: **" in report and "drgep-candidates.png" in report
    assert set(summary["verification"]["targets"]) == {"ignition-delay", "equilibrium-temperature"}
    assert summary["reduced"]["n_species"] < 10
