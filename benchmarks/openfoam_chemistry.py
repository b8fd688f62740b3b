"""OpenFOAM chemistry wall time per time step: deepkin in-process (the model file in the solver's
own process), deepkin over the service (one request per rank) and OpenFOAM's own ODE chemistry,
same case, same deltaT, same number of cores::

    python benchmarks/openfoam_chemistry.py       # h2-air-flame and ch4-air, 1e3 and 1e5 cells, 1 core
    python benchmarks/openfoam_chemistry.py --models h2-air-flame --cells 1000 --cores 1,2
    python benchmarks/openfoam_chemistry.py --cores 2 --variants inprocess   # 2 ranks, in-process only
    python benchmarks/openfoam_chemistry.py --device cuda --cores 1,16        # on a GPU machine
    python benchmarks/openfoam_chemistry.py --variants inprocess --malloc-baseline --repeat 30

The cells are a real flame: Cantera's freely propagating stoichiometric flame of the model's fuel
in air (300 K, 1 atm, the model's mechanism; shipped ``h2-air-flame`` (H2) and ``ch4-air`` (CH4,
GRI-3.0) by default) on the uniform mesh of `deepkin openfoam case flame1d` (30 flame
thicknesses, the flame at 30 %: cold inlet cells, the flame, burnt gas). On several ranks the
cells are dealt out round-robin, so that every rank has the same chemistry load. Each variant is
`deepkinChemistryTime` (couplers/openfoam): the case's chemistry.solve(deltaT) on those fields,
one untimed call, then --repeat timed calls, which is what reactingFoam pays per time step. The
ratios are of the fastest timed call of each variant (min), the figure least disturbed by other
work on a shared machine; the means are printed beside them.

Variants, per core (C cores = C MPI ranks, each with one thread):
- in-process: `deepkinCoeffs { modelFile ...; threads 1; }` (the file of `deepkin export`, its
  precision as the service would choose it here), C ranks each stepping its own cells; with
  --malloc-baseline also with ``DEEPKIN_MALLOC=system`` (glibc's allocator thresholds left as
  they are, so the step's temporaries are mapped and faulted in afresh each call: the backend
  before it raised them), alternately, twice each, with the ratio;
- service: `deepkin serve --threads C` and C MPI ranks sending the requests, on the same machine;
- OpenFOAM's own chemistry on the same mechanism: ode with seulex at relTol 1e-4 (what export
  writes) and 0.1 (the chemFoam tutorial's), absTol 1e-12, and EulerImplicit with cTauChem 1 (the
  reactingFoam tutorials'; fastest, but 17 % short on the 1200 K ignition delay).
With --device cuda the service and the in-process file run on the GPU, and the figures are
labelled so: they are not per-core figures.

OpenFOAM's ODE chemistry costs the same per cell whatever the mesh (every cell is integrated on
its own), so on meshes above --ode-cells (default 10^4) the ODE variants are timed on the same flame
meshed with --ode-cells cells (the same share of cold, flame and burnt cells) and scaled by the
ratio of cell counts; the line says so. GRI-3.0 seulex on 10^5 cells would otherwise take minutes
per step.
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
from service.live_server import LiveServer  # noqa: E402

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


def time_chemistry(case: Path, ranks: int, repeat: int, label: str, solver: str,
                   env: dict[str, str] | None = None) -> dict:
    """One deepkinChemistryTime run; mean and min wall time (s) per step and the log's counts.
    A deepkin case gets two untimed calls first (libtorch optimises the model's graph on the
    second, ~0.3 s), OpenFOAM's own chemistry one; ``env`` adds to the run's environment."""
    log = case / f"log.time.{label}.{ranks}"
    warmup = "2" if solver == "deepkin" else "1"
    run_application(str(timer_path()), case, "-time", "0", "-repeat", str(repeat), "-warmup", warmup,
                    ranks=ranks, log=log, env={"DEEPKIN_TOKEN": TOKEN, **(env or {})})
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


def prepare(cells: int, ranks: list[int], workdir: Path, url: str, model: str, fuel: str,
            dt_s: float, variants: list[str], threads: int = 1, device: str = "cpu") -> dict[str, Path]:
    """The cases of ``cells`` cells for ``variants`` (``service``, ``inprocess``, ``ode``; the
    same fields and mesh), each decomposed for every rank count > 1."""
    name = Path(model).stem
    first = workdir / f"{name}-{cells}-{variants[0]}"
    spec = CaseSpec(kind="flame1d", model=model, temperature_k=300.0, pressure_pa=ONE_ATM_PA, phi=1.0,
                    fuel=fuel, oxidizer="O2:1,N2:3.76", chemistry="deepkin", url=url, cells=cells,
                    end_time_s=dt_s)
    write_case(spec, first)
    cases = {variants[0]: first}
    for variant in variants[1:]:
        cases[variant] = workdir / f"{name}-{cells}-{variant}"
        shutil.copytree(first, cases[variant])
    for variant, case in cases.items():
        if variant == "inprocess":
            export_case(model, case, "deepkin-inprocess", threads=threads, device=device)
        elif variant == "ode":
            export_case(model, case, "ode")
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
    return cases


def use_decomposition(case: Path, ranks: int) -> None:
    """Put the processorN folders of the ``ranks``-way decomposition in place."""
    for d in case.glob("processor*"):
        if "." not in d.name:
            shutil.rmtree(d)
    for d in case.glob(f"processor*.ranks{ranks}"):
        shutil.copytree(d, case / d.name.split(".")[0])


VARIANTS = ("inprocess", "service", "ode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="1000,100000", help="Mesh sizes (comma-separated).")
    parser.add_argument("--cores", default="1", help="Core counts = MPI ranks (comma-separated).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed chemistry steps per variant.")
    parser.add_argument("--ode-repeat", type=int, default=1,
                        help="Timed steps of the ODE variants (after the untimed one).")
    parser.add_argument("--ode-cells", type=int, default=10_000,
                        help="Time the ODE variants on at most this many cells, scaled (see above).")
    parser.add_argument("--device", default="cpu", help="The service's and the in-process file's "
                                                        "device: cpu, cuda, cuda:N.")
    parser.add_argument("--workdir", help="Keep the cases here (default: a temporary folder).")
    parser.add_argument("--json", dest="json_path", help="Write the figures to this JSON file.")
    parser.add_argument("--models", default="h2-air-flame,ch4-air",
                        help="Shipped model names or model files (comma-separated).")
    parser.add_argument("--fuel", help="Fuel of the flame (mole basis; default: each model's).")
    parser.add_argument("--malloc-baseline", action="store_true",
                        help="Time the in-process step also with DEEPKIN_MALLOC=system (glibc's "
                             "own allocator thresholds, as before the backend raised them), "
                             "alternately, and print the ratio.")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"Which of {', '.join(VARIANTS)} to time (comma-separated).")
    args = parser.parse_args()
    from kinetics.model.model_file import read_model_file
    from kinetics.model.registry import resolve_model

    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    if not variants:
        parser.error(f"--variants: none of {', '.join(VARIANTS)}")
    cells_list = [int(c) for c in args.cells.split(",")]
    cores_list = sorted({int(c) for c in args.cores.split(",")})
    build()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="deepkin-of-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}; load average {load} before the "
          f"timings (other work on the machine slows every variant); device {args.device}; "
          f"cases in {workdir}", flush=True)
    results = []
    url_placeholder = "http://127.0.0.1:1"  # rewritten per server below
    for model in args.models.split(","):
        model_path = resolve_model(model)
        meta = read_model_file(model_path)[0]
        fuel = args.fuel or meta.training.get("fuel") or "H2:1"
        cases = {}
        for n in cells_list:
            deepkin_variants = [v for v in variants if v != "ode"]
            if deepkin_variants:
                cases[n] = prepare(n, cores_list, workdir, url_placeholder, str(model_path), fuel,
                                   meta.dt_s, deepkin_variants, device=args.device)
            if "ode" in variants:
                m = min(n, args.ode_cells)
                ode = workdir / f"{model_path.stem}-{m}-ode"
                if not ode.exists():
                    prepare(m, cores_list, workdir, url_placeholder, str(model_path), fuel, meta.dt_s,
                            ["ode"])
                cases.setdefault(n, {})["ode"] = ode
        print(f"\nmodel {model_path.stem}: {len(meta.species)} species, deltaT {meta.dt_s:g} s, "
              f"fuel {fuel}", flush=True)
        for cores in cores_list:
            server = (LiveServer(model_path.parent, "--token", TOKEN, "--threads", str(cores),
                                 "--device", args.device) if "service" in variants else None)
            try:
                if server:
                    server.__enter__()
                for cells, by_variant in cases.items():
                    row = {"model": model_path.stem, "cells": cells, "cores": cores,
                           "device": args.device, "load_average": os.getloadavg()[0]}
                    if server:
                        case = by_variant["service"]
                        chemistry = case / "constant" / "chemistryProperties"
                        chemistry.write_text(re.sub(r'url\s+"[^"]*";', f'url             "{server.url}";',
                                                    chemistry.read_text()))
                        use_decomposition(case, cores)
                        row["service"] = time_chemistry(case, cores, args.repeat, "service", "deepkin")
                    if "inprocess" in variants:
                        case = by_variant["inprocess"]
                        use_decomposition(case, cores)
                        if args.malloc_baseline:
                            # alternately, twice each: the fastest of either is compared
                            runs: dict[str, list[dict]] = {"inprocess_system_malloc": [], "inprocess": []}
                            for _ in range(2):
                                runs["inprocess_system_malloc"].append(time_chemistry(
                                    case, cores, args.repeat, "inprocess-system-malloc", "deepkin",
                                    env={"DEEPKIN_MALLOC": "system"}))
                                runs["inprocess"].append(time_chemistry(case, cores, args.repeat,
                                                                        "inprocess", "deepkin"))
                            for key, timed in runs.items():
                                row[key] = min(timed, key=lambda r: r["min_s"])
                        else:
                            row["inprocess"] = time_chemistry(case, cores, args.repeat, "inprocess",
                                                              "deepkin")
                    if "ode" in variants:
                        case = by_variant["ode"]
                        use_decomposition(case, cores)
                        timed = int(re.search(r"-(\d+)-ode$", case.name).group(1))
                        row["ode"] = {}
                        for label, (chemistry_solver, solver, rel_tol) in BASELINES.items():
                            set_baseline(case, chemistry_solver, solver, rel_tol)
                            ode = time_chemistry(case, cores, args.ode_repeat,
                                                 f"{chemistry_solver}-{rel_tol}", chemistry_solver)
                            scale = cells / timed
                            ode.update(timed_cells=timed, mean_s=ode["mean_s"] * scale,
                                       min_s=ode["min_s"] * scale)
                            row["ode"][label] = ode
                    results.append(row)
                    _print_row(row)
            finally:
                if server:
                    server.__exit__(None, None, None)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1) + "\n")


def _print_row(row: dict) -> None:
    label = "cores" if row["device"] == "cpu" else f"ranks, deepkin on {row['device']} (not per core)"
    print(f"\n{row['model']}, {row['cells']} cells, {row['cores']} {label} (load average "
          f"{row['load_average']:.2f}):")
    reference = row.get("inprocess") or row.get("service")
    for name, key in (("deepkin in-process", "inprocess"), ("deepkin service", "service")):
        if key not in row:
            continue
        dk = row[key]
        ratio = (f"; service / in-process = {dk['min_s'] / row['inprocess']['min_s']:.2f}"
                 if key == "service" and "inprocess" in row else "")
        print(f"  {name:<51}{dk['mean_s'] * 1e3:10.2f} ms/step (min {dk['min_s'] * 1e3:.2f}); "
              f"network {100 * dk['network_fraction']:.1f} % of cells "
              f"({100 * dk['reacting_network_fraction']:.1f} % of the non-frozen), fallback "
              f"{100 * dk['fallback_fraction']:.2f} %{ratio}")
    if "inprocess_system_malloc" in row:
        dk = row["inprocess_system_malloc"]
        print(f"  {'deepkin in-process, DEEPKIN_MALLOC=system':<51}{dk['mean_s'] * 1e3:10.2f} ms/step "
              f"(min {dk['min_s'] * 1e3:.2f}); / in-process = "
              f"{dk['min_s'] / row['inprocess']['min_s']:.2f}")
    for name, ode in row.get("ode", {}).items():
        scaled = (f" [timed on {ode['timed_cells']} cells, x{row['cells'] / ode['timed_cells']:g}]"
                  if ode["timed_cells"] != row["cells"] else "")
        ratio = f"; / deepkin = {ode['min_s'] / reference['min_s']:.1f}" if reference else ""
        print(f"  OpenFOAM {name:<42}{ode['mean_s'] * 1e3:10.2f} ms/step (min {ode['min_s'] * 1e3:.2f})"
              f"{ratio}{scaled}")


if __name__ == "__main__":
    main()
