"""The a-posteriori flame tests in OpenFOAM for one or more models, with figures and a JSON table.

    python benchmarks/openfoam_flames.py --models h2-air-flame -o docs/openfoam-flames
    python benchmarks/openfoam_flames.py --models a.safetensors b.safetensors --work /tmp/flames \\
        --counterflow-end 0.01 -o results/
    python benchmarks/openfoam_flames.py --models ch4-air.safetensors --premixed 0.7:0.01 1:0.01 \\
        1.3:0.01 --counterflow-fuel CH4:1 --counterflow-steps-per-call 4 -o results-ch4/
    python benchmarks/openfoam_flames.py --models ch4-air --premixed 0.8:0.01:5 1.2:0.01:10 \\
        --no-counterflow --work ~/.cache/deepkin/flames-ch4 -o results-ch4-pressure/

For each model (served by one `deepkin serve` on a folder holding them all): the 1D premixed
flames at phi 0.5, 1 and 2.5 (1 atm, 300 K; flame speed from the front's drift; ``--premixed
PHI:END_S[:P_ATM[:CELLS]] …`` for others: a pressure in atm, default 1, and the cells of the
domain of 30 thermal thicknesses, default 400) and the 2D counterflow flame of H2/N2 50/50
(``--counterflow-fuel``) against air on the counterFlowFlame2D geometry (peak temperature and
its position on the centre line at the end). The models share one mechanism and fuel (the
first model's dataset's). The same cases on OpenFOAM's ODE chemistry are run once, in
``--work``/ode, and reused by every model (a rerun finds them there; they are keyed by phi,
pressure and cells, not by the end time, mechanism or fuel: use one ``--work`` per mechanism
and fuel, and a new one for a longer run). Writes ``flames.json`` and ``premixed.png``,
``counterflow.png`` into ``-o``. The pass/fail tests of record are
``tests/test_openfoam_flames.py`` (``-m slow``); this script tabulates models side by side (the
seed paper's comparison, the network sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from couplers.openfoam.build import build  # noqa: E402
from couplers.openfoam.counterflow import centreline  # noqa: E402
from couplers.openfoam.flame_runs import (  # noqa: E402
    COUNTERFLOW_FUEL,
    COUNTERFLOW_STEPS_PER_CALL,
    CounterflowRun,
    PremixedRun,
    cached_run,
    counterflow_run,
    premixed_run,
)
from couplers.openfoam.foam import read_internal_field, time_directories  # noqa: E402
from couplers.openfoam.results import case_info  # noqa: E402
from kinetics.model.registry import resolve_model  # noqa: E402
from service.live_server import LiveServer  # noqa: E402

TOKEN = "openfoam-flames"  # the bearer token of the benchmark's own server
PREMIXED = [(0.5, 2e-3, 1.0, 400), (1.0, 1e-3, 1.0, 400), (2.5, 1e-3, 1.0, 400)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="shipped names or files")
    parser.add_argument("--work", default="/tmp/deepkin-flames", help="folder for the cases")
    parser.add_argument("--counterflow-end", type=float, default=0.02, help="s")
    parser.add_argument("--no-counterflow", action="store_true")
    parser.add_argument("--premixed", nargs="+", metavar="PHI:END_S[:P_ATM[:CELLS]]",
                        help="premixed flames as phi:end time (s)[:pressure (atm)[:cells]] "
                             "(default " + " ".join(f"{p:g}:{e:g}" for p, e, _, _ in PREMIXED)
                             + ")")
    parser.add_argument("--counterflow-fuel", default=COUNTERFLOW_FUEL,
                        help="fuel stream of the counterflow (mole basis)")
    parser.add_argument("--counterflow-steps-per-call", type=int,
                        default=COUNTERFLOW_STEPS_PER_CALL,
                        help="model steps per CFD step of the counterflow")
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args()
    premixed = PREMIXED if not args.premixed else [_premixed_flame(v, parser)
                                                   for v in args.premixed]
    def premixed_from(d):
        return PremixedRun(**d)

    counterflow_from = CounterflowRun.from_dict

    build()  # deepkin openfoam build (a no-op when built already)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    models.mkdir(exist_ok=True)
    names, files = [], {}  # served names (the files' stems) and the copies the server reads
    for m in args.models:
        path = resolve_model(m)
        shutil.copy(path, models / path.name)
        names.append(path.stem)
        files[path.stem] = str(models / path.name)
    table: dict = {"premixed": {}, "counterflow": {}}
    with LiveServer(models, "--token", TOKEN) as srv:
        for phi, end, atm, cells in premixed:
            key = _premixed_key(phi, atm, cells)
            flame = {"pressure_atm": atm, "cells": cells, "token": TOKEN}
            ode = cached_run(work / "ode" / f"premixed-{key}",
                          lambda k=key, p=phi, e=end, f=flame: premixed_run(
                              work / "ode" / f"premixed-{k}", srv.url, files[names[0]], "ode", p,
                              e, **f),
                          premixed_from)
            table["premixed"][key] = {"ode": dataclasses.asdict(ode)}
            for name in names:
                folder = work / name / f"premixed-{key}"
                run = cached_run(folder, lambda f=folder, n=name, p=phi, e=end, o=flame:
                              premixed_run(f, srv.url, files[n], "deepkin", p, e, **o),
                              premixed_from)
                table["premixed"][key][name] = dataclasses.asdict(run)
                print(f"premixed phi {key} {name}: {run.speed_m_s:.4f} m/s vs ODE "
                      f"{ode.speed_m_s:.4f} ({100 * (run.speed_m_s / ode.speed_m_s - 1):+.2f} %), "
                      f"served {100 * run.reacting_network_fraction:.1f} %", flush=True)
        if not args.no_counterflow:
            end = args.counterflow_end
            flow = {"fuel": args.counterflow_fuel,
                    "steps_per_call": args.counterflow_steps_per_call}
            ode = cached_run(work / "ode" / f"counterflow-{end:g}",
                          lambda: counterflow_run(work / "ode" / f"counterflow-{end:g}", srv.url,
                                                  files[names[0]], "ode", end, token=TOKEN,
                                                  **flow),
                          counterflow_from)
            table["counterflow"]["ode"] = dataclasses.asdict(ode)
            for name in names:
                folder = work / name / f"counterflow-{end:g}"
                run = cached_run(folder, lambda f=folder, n=name: counterflow_run(
                    f, srv.url, files[n], "deepkin", end, token=TOKEN, **flow), counterflow_from)
                table["counterflow"][name] = dataclasses.asdict(run)
                a = run.final
                b = min(ode.history, key=lambda h, t=a.time_s: abs(h.time_s - t))  # same time
                print(f"counterflow {name} at {a.time_s * 1e3:g} ms: peak {a.peak_temperature_k:.1f} K "
                      f"at {a.peak_position_m * 1e3:.3f} mm; ODE {b.peak_temperature_k:.1f} K at "
                      f"{b.peak_position_m * 1e3:.3f} mm; served "
                      f"{100 * run.reacting_network_fraction:.1f} %", flush=True)
    (out / "flames.json").write_text(json.dumps(table, indent=1))
    _figures(table, names, work, out, args, premixed)


def _premixed_flame(text: str, parser: argparse.ArgumentParser
                    ) -> tuple[float, float, float, int]:
    """``"0.7:0.01"`` → (0.7, 0.01, 1.0, 400), ``"0.8:0.01:5:300"`` → (0.8, 0.01, 5.0, 300):
    phi, end time (s), pressure (atm) and cells; a parser error for anything else."""
    parts = text.split(":")
    try:
        if not 2 <= len(parts) <= 4:
            raise ValueError
        phi, end = float(parts[0]), float(parts[1])
        atm = float(parts[2]) if len(parts) > 2 else 1.0
        cells = int(parts[3]) if len(parts) > 3 else 400
    except ValueError:
        parser.error(f"--premixed: expected PHI:END_S[:P_ATM[:CELLS]] such as 0.7:0.01 or "
                     f"0.8:0.01:5, got {text!r}")
    if not (phi > 0 and end > 0 and atm > 0):
        parser.error(f"--premixed: phi, end time and pressure must be > 0, got {text!r}")
    if cells < 10:
        parser.error(f"--premixed: a flame needs >= 10 cells, got {text!r}")
    return phi, end, atm, cells


def _premixed_key(phi: float, atm: float, cells: int) -> str:
    """The flame's name in the table and its folders: ``"0.7"`` at 1 atm on 400 cells (the
    names of earlier runs), ``"0.8-5atm"``, ``"0.8-5atm-300cells"`` otherwise."""
    key = f"{phi:g}" if atm == 1.0 else f"{phi:g}-{atm:g}atm"
    return key if cells == 400 else f"{key}-{cells}cells"


def _figures(table: dict, names: list[str], work: Path, out: Path, args,
             premixed: list[tuple[float, float, float, int]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(premixed), figsize=(4.2 * len(premixed), 3.2), squeeze=False)
    for ax, (phi, _, atm, cells) in zip(axes[0], premixed):
        runs = table["premixed"][_premixed_key(phi, atm, cells)]
        for label, run in runs.items():
            style = "k-" if label == "ode" else "--"
            ax.plot(np.array(run["times_s"]) * 1e3, np.array(run["positions_m"]) * 1e3, style,
                    label=f"{'OpenFOAM ODE' if label == 'ode' else label}: "
                          f"{run['speed_m_s']:.3f} m/s")
        ax.set_title(f"premixed, phi {phi:g}, {atm:g} atm", fontsize=9)
        ax.set_xlabel("t (ms)")
        ax.set_ylabel("flame position (mm)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "premixed.png", dpi=110)
    plt.close(fig)
    if args.no_counterflow:
        return
    end = f"{args.counterflow_end:g}"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label in ["ode", *names]:
        case = work / ("ode" if label == "ode" else label) / f"counterflow-{end}"
        info = case_info(case)
        t, folder = min(time_directories(case), key=lambda d: abs(d[0] - float(end)))
        line = centreline(info, read_internal_field(folder / "T"))
        x = (np.arange(info["cells_x"]) + 0.5) * info["dx_m"] * 1e3
        style = "k-" if label == "ode" else "--"
        axes[0].plot(x, line, style, label="OpenFOAM ODE" if label == "ode" else label)
        history = [h for h in table["counterflow"][label]["history"]
                   if h["time_s"] <= float(end) + 1e-9]
        axes[1].plot([h["time_s"] * 1e3 for h in history],
                     [h["peak_temperature_k"] for h in history], style,
                     label="OpenFOAM ODE" if label == "ode" else label)
    axes[0].set_xlabel("x from the fuel inlet (mm)")
    axes[0].set_ylabel(f"T on the centre line at {float(end) * 1e3:g} ms (K)")
    axes[1].set_xlabel("t (ms)")
    axes[1].set_ylabel("peak T on the centre line (K)")
    axes[0].set_title(f"counterflow {args.counterflow_fuel} vs air, 1 atm, 1 m/s jets", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "counterflow.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
