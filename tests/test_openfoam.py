"""deepkin chemistry in real OpenFOAM runs (Debian's v1912) against a live ``deepkin serve``:
build, export into a stock tutorial, chemFoam ignition delays against OpenFOAM's own ODE
chemistry on the same mechanism, and every refused input through a real run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cantera as ct
import pytest

from couplers.openfoam.results import case_info, ignition_delay, step_counts
from service.live_server import LiveServer, free_port
from tests.helpers.openfoam import (
    SHIPPED_MODELS,
    TOKEN,
    build_library,
    deepkin,
    require_openfoam,
    run_solver,
    set_entry,
    solver_error,
    write_case,
)

TUTORIAL = Path("/usr/share/doc/openfoam-examples/examples/combustion/chemFoam/h2")


@pytest.fixture(scope="module")
def library() -> Path:
    require_openfoam()
    return build_library()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """The shipped h2-air and ch4-air models (two mechanisms, two species sets)."""
    d = tmp_path_factory.mktemp("openfoam-models")
    for name in ("h2-air", "ch4-air"):
        shutil.copy(SHIPPED_MODELS / f"{name}.safetensors", d / f"{name}.safetensors")
    return d


@pytest.fixture(scope="module")
def live(library, models):
    with LiveServer(models, "--token", TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def chemfoam_case(live, tmp_path_factory) -> Path:
    """A deepkin chemFoam case at 1200 K, 1 atm, phi 1 (copied by the tests that edit it)."""
    return write_case("chemfoam", tmp_path_factory.mktemp("cf") / "case", "--T0", "1200", "--url", live.url,
                      "--end-time", "2e-5")


def test_build_prints_the_library_path_last(library):
    run = deepkin("openfoam", "build")
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip().splitlines()[-1]) == library and library.is_file()
    assert (library.parent.parent / "bin" / "deepkinChemistryTime").is_file()


@pytest.mark.parametrize("temperature_k", [1200.0, 1100.0])
def test_chemfoam_ignition_delay_deepkin_vs_ode(live, tmp_path, temperature_k):
    """Inside the model's domain (trained on T0 950-1500 K, phi 0.4-2.5): within 3 %."""
    idts = {}
    for chemistry in ("deepkin", "ode"):
        case = write_case("chemfoam", tmp_path / chemistry, "--T0", f"{temperature_k:g}", "--phi", "1",
                          "--pressure-atm", "1", "--chemistry", chemistry, "--url", live.url)
        log = run_solver("chemFoam", case)
        idts[chemistry] = ignition_delay(case)
        if chemistry == "deepkin":
            counts = step_counts(case / "log.chemFoam")
            steps = round(case_info(case)["end_time_s"] / 1e-6)
            assert counts.steps == steps and counts.cells == steps  # one 1-cell request per step
            assert "Selecting chemistry solver" in log and "solver          deepkin" in log
    cantera = case_info(tmp_path / "ode")["cantera_ignition_delay_s"]
    print(f"T0 {temperature_k:g} K: IDT deepkin {idts['deepkin'] * 1e6:.2f} us, OpenFOAM ODE "
          f"{idts['ode'] * 1e6:.2f} us, Cantera {cantera * 1e6:.2f} us")
    assert idts["deepkin"] == pytest.approx(idts["ode"], rel=0.03)
    assert idts["ode"] == pytest.approx(cantera, rel=0.03)  # the exported mechanism is Cantera's


def test_stock_tutorial_runs_on_deepkin_after_export(live, tmp_path):
    """OpenFOAM's own chemFoam/h2 tutorial, exported and run as it is (1000 K, 2 atm, phi 0.5)."""
    finals = {}
    for chemistry in ("deepkin", "ode"):
        case = tmp_path / chemistry
        shutil.copytree(TUTORIAL, case)
        run = deepkin("openfoam", "export", "h2-air", str(case), "--chemistry", chemistry, "--url", live.url)
        assert run.returncode == 0, run.stderr
        assert re.search(r"wrote 5 files in .*: h2o2.yaml \(10 species; Sutherland fits within [0-9.]+ % of "
                         r"Cantera's viscosities\)", run.stdout)
        log = run_solver("chemFoam", case)
        assert "Number of steps" in log
        water = (case / "0.001" / "H2O").read_text()
        finals[chemistry] = float(re.search(r"internalField\s+uniform\s+([-0-9.e+]+);", water).group(1))
    counts = step_counts(tmp_path / "deepkin" / "log.chemFoam")
    assert counts.steps == 1000  # adjustTimeStep on: deepkin keeps the model's 1 us from the first step
    assert counts.fallback == 1000  # 1000 K: below the network's range, Cantera inside the service
    assert finals["deepkin"] == pytest.approx(finals["ode"], rel=0.05)
    assert finals["ode"] > 0


def test_the_methane_model_exports_into_a_tutorial_openfoam_runs(live, tmp_path):
    """`deepkin openfoam export ch4-air CASE`: GRI-3.0 (53 species, 325 reactions, transport)
    written into the stock chemFoam/h2 tutorial; OpenFOAM reads it, and its ODE chemistry
    follows Cantera's on it."""
    case = tmp_path / "gri"
    shutil.copytree(TUTORIAL, case)
    run = deepkin("openfoam", "export", "ch4-air", str(case), "--chemistry", "ode")
    assert run.returncode == 0, run.stderr
    assert re.search(r"wrote 5 files in .*: gri30.yaml \(53 species; Sutherland fits", run.stdout)
    reactions = (case / "constant" / "reactions").read_text()
    assert len(re.findall(r"^\s*type\s+\w+Reaction;", reactions, re.M)) == 325
    log = run_solver("chemFoam", case)
    assert "Number of steps" in log
    water = float(re.search(r"internalField\s+uniform\s+([-0-9.e+]+);",
                            (case / "0.001" / "H2O").read_text()).group(1))
    gas = ct.Solution("gri30.yaml")  # Cantera on the same mechanism, 1 ms of the same mixture
    gas.TPX = 1000.0, 202650.0, "H2:1,N2:3.76,O2:1"
    ct.ReactorNet([ct.IdealGasConstPressureReactor(gas, clone=False)]).advance(1e-3)
    assert water == pytest.approx(gas["H2O"].Y[0], rel=0.05)  # the induction's first water


def test_methane_chemfoam_ignition_deepkin_vs_ode(live, tmp_path):
    """The shipped ch4-air model in a methane/air chemFoam case (1600 K, 1 atm, phi 1), one
    request per 5 us step, against OpenFOAM's ODE chemistry on the same GRI-3.0 case."""
    runs = {}
    for chemistry in ("deepkin", "ode"):
        case = write_case("chemfoam", tmp_path / chemistry, "--model", "ch4-air", "--T0", "1600",
                          "--phi", "1", "--fuel", "CH4:1", "--chemistry", chemistry,
                          "--url", live.url)
        run_solver("chemFoam", case)
        runs[chemistry] = case
    idts = {c: ignition_delay(case) for c, case in runs.items()}
    counts = step_counts(runs["deepkin"] / "log.chemFoam")
    steps = round(case_info(runs["deepkin"])["end_time_s"] / 5e-6)
    assert counts.steps == steps and counts.fallback < 0.05 * steps  # the network served it
    cantera = case_info(runs["ode"])["cantera_ignition_delay_s"]
    print(f"CH4 1600 K: IDT deepkin {idts['deepkin'] * 1e6:.1f} us, OpenFOAM ODE "
          f"{idts['ode'] * 1e6:.1f} us, Cantera {cantera * 1e6:.1f} us")
    assert idts["deepkin"] == pytest.approx(idts["ode"], rel=0.05)
    assert idts["ode"] == pytest.approx(cantera, rel=0.03)


def _copy(case: Path, to: Path) -> Path:
    shutil.copytree(case, to)
    return to


def test_wrong_token_is_one_fatal_error(chemfoam_case, tmp_path):
    case = _copy(chemfoam_case, tmp_path / "case")
    error = solver_error("chemFoam", case, token="not-the-token")
    assert re.search(r"deepkin: cannot use model 'h2-air' at http://127.0.0.1:\d+ \(deepkinCoeffs\): "
                     r"GET \S+: HTTP 403: authorization: the bearer token is not valid", error), error


def test_server_down_is_one_fatal_error_after_the_timeout(chemfoam_case, tmp_path):
    case = _copy(chemfoam_case, tmp_path / "case")
    url = f"http://127.0.0.1:{free_port()}"
    chemistry = case / "constant" / "chemistryProperties"
    set_entry(chemistry, "url", f'"{url}"')
    set_entry(chemistry, "timeout", "2")
    error = solver_error("chemFoam", case)
    assert re.search(rf"no server at {re.escape(url)}: connection refused \(\d+ tries in 2 s\); is `deepkin "
                     r"serve` running there\?", error), error


def test_deltat_not_a_multiple_of_the_model_dt(chemfoam_case, tmp_path):
    case = _copy(chemfoam_case, tmp_path / "case")
    set_entry(case / "system" / "controlDict", "deltaT", "1.5e-06")
    error = solver_error("chemFoam", case)
    assert ("deepkin: deltaT = 1.5e-06 s is not a whole multiple of the dt of model 'h2-air' (1e-06 s)"
            in error), error


def test_another_mechanism_is_refused(chemfoam_case, live, tmp_path):
    case = _copy(chemfoam_case, tmp_path / "case")
    set_entry(case / "constant" / "chemistryProperties", "model", "ch4-air")
    error = solver_error("chemFoam", case)
    assert re.search(r"model 'ch4-air' at \S+ has mechanism sha256 [0-9a-f]{12}\.\.\., expected "
                     r"0efc6c528627\.\.\.: it was trained on another mechanism", error), error


def test_species_set_differs_from_the_models(chemfoam_case, live, tmp_path):
    """The mechanism hash matches (copied from the model) but the case's species are h2o2's."""
    import httpx

    case = _copy(chemfoam_case, tmp_path / "case")
    sha = httpx.get(f"{live.url}/v1/models/ch4-air", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    chemistry = case / "constant" / "chemistryProperties"
    set_entry(chemistry, "model", "ch4-air")
    set_entry(chemistry, "mechanismSha256", f'"{sha["mechanism_sha256"]}"')
    error = solver_error("chemFoam", case)
    assert re.search(r"deepkin: the case's species differ from those of model 'ch4-air': the "
                     r"case lacks C CH CH2 .* and has none that the model lacks", error), error


def test_local_time_stepping_is_refused(chemfoam_case, tmp_path):
    case = _copy(chemfoam_case, tmp_path / "case")
    schemes = case / "system" / "fvSchemes"
    schemes.write_text(schemes.read_text().replace("default         Euler;", "default         localEuler;"))
    error = solver_error("chemFoam", case)
    assert "deepkin: local time stepping (ddtSchemes localEuler) is not supported" in error


def test_cli_bad_input_is_one_line(tmp_path):
    require_openfoam()
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "controlDict").write_text("application chemFoam;\n")
    case, new = str(tmp_path), str(tmp_path / "new")
    cases = [(("export", "h2-air", str(tmp_path / "nothing")), "is not an OpenFOAM case"),
             (("export", "no-such-model", case), "is neither a file nor a shipped model"),
             (("export", "h2-air", case, "--url", "127.0.0.1:8000"), "is not an http(s) URL"),
             (("case", "chemfoam", "-o", new, "--phi", "-1"), "phi: must be > 0"),
             (("case", "flame1d", "-o", new, "--cells", "3"), "cells: a flame needs"),
             (("build", "--source", case), "is not an OpenFOAM source tree")]
    for args, message in cases:
        run = deepkin("openfoam", *args)
        assert run.returncode == 1, (args, run.stdout, run.stderr)
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
