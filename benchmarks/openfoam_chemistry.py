"""OpenFOAM chemistry wall time per time step: deepkin (one request per rank) against OpenFOAM's own
ODE chemistry, same case, same deltaT, same number of cores::

    python benchmarks/openfoam_chemistry.py                           # 1e3 and 1e5 cells, 1 and all cores
    python benchmarks/openfoam_chemistry.py --cells 100000 --cores 2 --repeat 5
    python benchmarks/openfoam_chemistry.py --device cuda --cores 1,16   # on a GPU machine
    python benchmarks/openfoam_chemistry.py --model ch4-air.safetensors --fuel CH4:1 --cells 1000

The cells are a real flame: Cantera's freely propagating stoichiometric flame of ``--fuel`` in air
(300 K, 1 atm, the mechanism of ``--model``: shipped ``h2-air`` and H2 by default) on the uniform
mesh of `deepkin openfoam case flame1d`
(30 flame thicknesses, the flame at 30 %: cold inlet cells, the flame, burnt gas). On several
ranks the cells are dealt out round-robin, so that every rank has the same chemistry load. Each variant is
`deepkinChemistryTime` (couplers/openfoam): the case's chemistry.solve(deltaT) on those fields,
one untimed call, then --repeat timed calls, which is what reactingFoam pays per time step.

Cores: ODE on C cores = C MPI ranks; deepkin on C cores = `deepkin serve --threads C` (torch's
threads) and C MPI ranks sending the requests, on the same machine. With --device cuda the service
runs on the GPU, and the figures are labelled so: they are not per-core figures.
Baselines, OpenFOAM's own chemistry on the same mechanism: ode with seulex at relTol 1e-4 (what
export writes) and 0.1 (the chemFoam tutorial's), absTol 1e-12, and EulerImplicit with cTauChem 1
(the reactingFoam tutorials'; fastest, but 17 % short on the 1200 K ignition delay).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from couplers.openfoam.build import build, timer_path  # noqa: E402
from couplers.openfoam.cases import CaseSpec, write_case  # noqa: E402
from couplers.openfoam.export import export_case  # noqa: E402
from couplers.openfoam.foam import run_application, write_foam_file  # noqa: E402
from couplers.openfoam.results import step_counts  # noqa: E402
from mechanisms.state import ONE_ATM_PA  # noqa: E402
from tests.helpers.live_server import LiveServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchmark-token"
TIMING = re.compile(r"chemistry time: cells (\d+), ranks (\d+), deltaT \S+ s, repeat (\d+), "
                    r"mean ([0-9.eE+-]+) s, min ([0-9.eE+-]+) s per step")
# OpenFOAM's own chemistry: (chemistryType solver, ODE solver, relTol). Accuracy on this project's
# cases (docs/openfoam.md): seulex 1e-4 and 0.1 both give the flame speed within 0.01 % and the
# 1200 K ignition delay within 0.5 % of Cantera; EulerImplicit (cTauChem 1, the reactingFoam
# tutorials') gives the flame speed within 0.6 % but the 1200 K ignition delay 17 % short.
BASELINES = {"ode seulex relTol 1e-4 (export)": ("ode", "seulex", "1e-4"),
             "ode seulex relTol 0.1 (chemFoam tutorial)": ("ode", "seulex", "1e-1"),
             "EulerImplicit cTauChem 1 (reactingFoam tut.)": ("EulerImplicit", "seulex", "1e-4")}


def time_chemistry(case: Path, ranks: int, repeat: int, label: str, solver: str) -> dict:
    """One deepkinChemistryTime run; mean and min wall time (s) per step and the log's counts."""
    log = case / f"log.time.{label}.{ranks}"
    run_application(str(timer_path()), case, "-time", "0", "-repeat", str(repeat), ranks=ranks, log=log,
                    env={"DEEPKIN_TOKEN": TOKEN})
    text = log.read_text()
    match = TIMING.findall(text)
    if not match:
        raise RuntimeError(f"no timing line in {log}")
    if not re.search(rf"Selecting chemistry solver\s*\{{\s*solver\s+{solver};", text):
        raise RuntimeError(f"{log}: the chemistry solver is not {solver}")
    cells, _, _, mean, fastest = match[-1]
    counts = step_counts(log)
    return {"cells": int(cells), "mean_s": float(mean), "min_s": float(fastest),
            "network_fraction": counts.network_fraction if counts.steps else None,
            "reacting_network_fraction": counts.reacting_network_fraction if counts.steps else None,
            "fallback_fraction": counts.fallback / counts.cells if counts.cells else None}


def set_baseline(case: Path, chemistry: str, ode_solver: str, rel_tol: str) -> None:
    """Select OpenFOAM's chemistry solver (ode or EulerImplicit) and the ODE settings."""
    path = case / "constant" / "chemistryProperties"
    text = path.read_text()
    text = re.sub(r"(chemistryType\s*\{[^}]*?solver\s+)\w+;", rf"\g<1>{chemistry};", text, flags=re.S)
    text = re.sub(r"(odeCoeffs\s*\{[^}]*?solver\s+)\w+;", rf"\g<1>{ode_solver};", text, flags=re.S)
    text = re.sub(r"(odeCoeffs\s*\{[^}]*?relTol\s+)[^;]+;", rf"\g<1>{rel_tol};", text, flags=re.S)
    if "EulerImplicitCoeffs" not in text:
        text += "\nEulerImplicitCoeffs\n{\n    cTauChem        1;\n    equilibriumRateLimiter off;\n}\n"
    path.write_text(text)


def prepare(cells: int, ranks: list[int], workdir: Path, url: str, model: str = "h2-air",
            fuel: str = "H2:1", dt_s: float = 1e-6) -> tuple[Path, Path]:
    """The deepkin and ODE cases of ``cells`` cells, decomposed for every rank count > 1."""
    deepkin_case, ode_case = workdir / f"deepkin-{cells}", workdir / f"ode-{cells}"
    spec = CaseSpec(kind="flame1d", model=model, temperature_k=300.0, pressure_pa=ONE_ATM_PA, phi=1.0,
                    fuel=fuel, oxidizer="O2:1,N2:3.76", chemistry="deepkin", url=url, cells=cells,
                    end_time_s=dt_s)
    write_case(spec, deepkin_case)
    shutil.copytree(deepkin_case, ode_case)
    export_case(model, ode_case, "ode")
    for case in (deepkin_case, ode_case):
        for n in ranks:
            if n > 1:
                # Cell i on rank i % n: every rank holds the same mix of cold, flame and burnt cells,
                # so the ODE ranks are balanced (the strongest baseline; slabs along x left one
                # rank with the cheap cold cells and took 1.4x instead of 2x on 2 ranks)
                write_foam_file(case / "constant" / "cellDecomposition",
                                f"{cells}\n(\n" + "\n".join(str(i % n) for i in range(cells)) + "\n)\n",
                                cls="labelList")
                write_foam_file(case / "system" / "decomposeParDict", f"""numberOfSubdomains {n};

method          manual;

coeffs
{{
    dataFile        "cellDecomposition";
}}
""")
                for old in case.glob("processor*"):
                    shutil.rmtree(old)
                run_application("decomposePar", case, log=case / f"log.decomposePar.{n}")
                for d in case.glob("processor*"):
                    d.rename(case / f"{d.name}.ranks{n}")
    return deepkin_case, ode_case


def use_decomposition(case: Path, ranks: int) -> None:
    """Put the processorN folders of the ``ranks``-way decomposition in place."""
    for d in case.glob("processor*"):
        if "." not in d.name:
            shutil.rmtree(d)
    for d in case.glob(f"processor*.ranks{ranks}"):
        shutil.copytree(d, case / d.name.split(".")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="1000,100000", help="Mesh sizes (comma-separated).")
    parser.add_argument("--cores", default=f"1,{os.cpu_count() or 1}", help="Core counts (comma-separated).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed chemistry steps per variant.")
    parser.add_argument("--device", default="cpu", help="The service's device: cpu, cuda, cuda:N.")
    parser.add_argument("--workdir", help="Keep the cases here (default: a temporary folder).")
    parser.add_argument("--json", dest="json_path", help="Write the figures to this JSON file.")
    parser.add_argument("--model", default="h2-air", help="Shipped model name or model file.")
    parser.add_argument("--fuel", default="H2:1", help="Fuel of the flame (mole basis).")
    args = parser.parse_args()
    from kinetics.model_file import read_model_file
    from kinetics.registry import resolve_model

    model_path = resolve_model(args.model)
    dt_s = read_model_file(model_path)[0].dt_s
    cells_list = [int(c) for c in args.cells.split(",")]
    cores_list = sorted({int(c) for c in args.cores.split(",")})
    build()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="deepkin-of-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    url_placeholder = "http://127.0.0.1:1"  # rewritten per server below
    cases = {n: prepare(n, cores_list, workdir, url_placeholder, str(model_path), args.fuel, dt_s)
             for n in cells_list}
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}; load average {load} before the "
          f"timings (other work on the machine slows both sides); service device {args.device}; "
          f"model {model_path.stem}, deltaT {dt_s:g} s; cases in {workdir}")
    for cores in cores_list:
        with LiveServer(model_path.parent, "--token", TOKEN, "--threads", str(cores),
                        "--device", args.device) as server:
            for cells, (deepkin_case, ode_case) in cases.items():
                chemistry = deepkin_case / "constant" / "chemistryProperties"
                chemistry.write_text(re.sub(r'url\s+"[^"]*";', f'url             "{server.url}";',
                                            chemistry.read_text()))
                use_decomposition(deepkin_case, cores)
                row = {"cells": cells, "cores": cores, "device": args.device}
                row["deepkin"] = time_chemistry(deepkin_case, cores, args.repeat, "deepkin", "deepkin")
                use_decomposition(ode_case, cores)
                row["ode"] = {}
                for label, (chemistry_solver, solver, rel_tol) in BASELINES.items():
                    set_baseline(ode_case, chemistry_solver, solver, rel_tol)
                    row["ode"][label] = time_chemistry(ode_case, cores, args.repeat,
                                                       f"{chemistry_solver}-{rel_tol}", chemistry_solver)
                results.append(row)
                _print_row(row)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1) + "\n")


def _print_row(row: dict) -> None:
    dk = row["deepkin"]
    label = "cores" if row["device"] == "cpu" else f"ranks, service on {row['device']} (not per core)"
    print(f"\n{row['cells']} cells, {row['cores']} {label}:")
    print(f"  deepkin{'':<44}{dk['mean_s'] * 1e3:10.2f} ms/step (min "
          f"{dk['min_s'] * 1e3:.2f}); network served {100 * dk['network_fraction']:.1f} % of cells "
          f"({100 * dk['reacting_network_fraction']:.1f} % of the non-frozen), fallback "
          f"{100 * dk['fallback_fraction']:.2f} %")
    for name, ode in row["ode"].items():
        print(f"  OpenFOAM {name:<42}{ode['mean_s'] * 1e3:10.2f} ms/step (min {ode['min_s'] * 1e3:.2f}); "
              f"OpenFOAM / deepkin = {ode['mean_s'] / dk['mean_s']:.2f}")


if __name__ == "__main__":
    main()
