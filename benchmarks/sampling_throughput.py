"""Sampling throughput: rows/s of the whole pipeline with 1 and k workers against the bare,
single-core Cantera labelling loop on the same states, measured in one run; with ``--before``,
the labelling of today's settings against an earlier tolerance, in the same run.

    python benchmarks/sampling_throughput.py [--workers 1 2] [--scale 1.0] [--mechanism h2o2.yaml]
    python benchmarks/sampling_throughput.py --recipe methane --before 1e-10:1e-20 --workers 2

Parallel efficiency = rows/s with k workers / (k × bare single-core rows/s). The pipeline does
more than label (it draws, filters, simulates the autoignition cases, journals and writes HDF5),
so the ratio is conservative. Flames are left out of the h2 recipe: one flame is one serial task.

``--before RTOL:ATOL`` (the label tolerances before the study of docs/sampling.md, "Label
tolerances") runs the pipeline at those tolerances and at today's (``LABEL_TOLERANCES``) and
labels the same rows both ways on one core: before = a fresh reactor per row at the old
tolerances (the former labelling), after = what ``sampling.tasks`` does now (one reactor per task,
restarted per row, today's tolerances). ``--recipe methane`` is a slice of the ch4-air recipe
(GRI-3.0, dt 5 us: autoignition, one free and one counterflow flame, the scattered sources).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mechanisms import load_mechanism
from mechanisms.dataset_file import read_dataset
from mechanisms.executor import DaskExecutor
from mechanisms.reactor import LABEL_TOLERANCES, ReactorStep, Tolerances
from sampling.config import SamplingConfig
from sampling.pipeline import run_sampling


def config_for(mechanism: str, fuel: str, scale: float) -> SamplingConfig:
    rows = {"autoignition": 2000, "free_flame": 0, "counterflow": 0, "multiscale": 4000,
            "perturbed": 3000, "emcs": 1000}
    return SamplingConfig.from_dict({
        "mechanism": mechanism, "fuel": fuel, "oxidizer": "O2:1,N2:3.76",
        "phi": [0.5, 1.0, 2.0], "temperature_k": [1000, 1200, 1400], "pressure_atm": [1, 5],
        "seed": 1, "task_rows": 200, "rows": {k: int(v * scale) for k, v in rows.items()}})


def methane_config(scale: float) -> SamplingConfig:
    """A slice of kinetics/shipped/ch4-air.sample.yaml: its sources in its proportions."""
    rows = {"autoignition": 4000, "free_flame": 1500, "counterflow": 800, "multiscale": 1000,
            "perturbed": 1200, "emcs": 600, "equilibrium": 1000}
    return SamplingConfig.from_dict({
        "mechanism": "gri30.yaml", "fuel": "CH4:1", "oxidizer": "O2:1,N2:3.76",
        "phi": [0.7, 1.0, 1.5], "temperature_k": [1000, 1300, 1600], "pressure_atm": [1, 10],
        "dt": 5e-6, "seed": 7, "task_rows": 500,
        "rows": {k: int(v * scale) for k, v in rows.items()},
        "autoignition": {"t_max_s": 4.0},
        "free_flame": {"phi": [1.0], "pressure_atm": [1], "transport": ["mixture-averaged"]},
        "counterflow": {"fuels": ["CH4:0.5,N2:0.5"], "pressure_atm": [1], "strain_rate_s": [100],
                        "width_m": 0.03},
        "perturbed": {"alpha": 0.05}})


def parse_tolerance(text: str) -> Tolerances:
    rtol, atol = text.split(":")
    return Tolerances(float(rtol), float(atol))


def run_pipeline(config: SamplingConfig, out: Path, workers: int) -> tuple[int, float]:
    """``(rows, seconds)`` of one ``run_sampling`` on ``workers`` Dask workers (start-up untimed)."""
    with DaskExecutor(workers=workers) as executor:
        started = time.perf_counter()
        summary = run_sampling(config, out, executor=executor, progress=False, log=lambda _msg: None)
        return summary.n_rows, time.perf_counter() - started


def bare_rate(stepper: ReactorStep, states) -> float:
    """Rows/s of ``stepper`` over ``states`` on this core (CPU time of this process)."""
    started = time.process_time()
    stepper.advance_all(states)
    return len(states) / (time.process_time() - started)


def compare_tolerances(config: SamplingConfig, before: Tolerances, workers: int, tmp: str) -> None:
    """The pipeline and the bare labelling loop at ``before`` and at today's settings."""
    after = Tolerances(config.rtol, config.atol)
    old = SamplingConfig.from_dict({**config.to_dict(), "rtol": before.rtol, "atol": before.atol})
    pipeline = {}
    for name, cfg in (("before", old), ("after", config)):
        rows, seconds = run_pipeline(cfg, Path(tmp) / f"{name}.h5", workers)
        pipeline[name] = rows / seconds
        print(f"pipeline, {workers} worker(s), labels rtol {cfg.rtol:g} / atol {cfg.atol:g}: "
              f"{rows} rows in {seconds:.1f} s = {pipeline[name]:.0f} rows/s")
    inputs, _, _ = read_dataset(Path(tmp) / "after.h5")
    mech = load_mechanism(config.mechanism)
    gas = mech.solution()
    # Interleaved halves so that a change in the machine's load hits both alike.
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for part in (inputs[0::2], inputs[1::2]):
        rates["before"].append(bare_rate(ReactorStep(gas, config.dt, before), part))
        rates["after"].append(bare_rate(ReactorStep(gas, config.dt, after, reuse=True), part))
    bare = {k: 2.0 / sum(1.0 / r for r in v) for k, v in rates.items()}
    print(f"labelling loop, 1 core, {len(inputs)} rows: before (fresh reactor a row, rtol "
          f"{before.rtol:g} / atol {before.atol:g}) {bare['before']:.0f} rows/s, after (one reactor "
          f"a task, rtol {after.rtol:g} / atol {after.atol:g}) {bare['after']:.0f} rows/s")
    print(f"labelling: {bare['after'] / bare['before']:.2f}x cheaper (goal >= 3); whole pipeline "
          f"(flames and profiles included): {pipeline['after'] / pipeline['before']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 2])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    parser.add_argument("--mechanism", default="h2o2.yaml")
    parser.add_argument("--fuel", default="H2:1")
    parser.add_argument("--recipe", choices=["h2", "methane"], default="h2",
                        help="h2: --mechanism/--fuel on a small grid; methane: a slice of ch4-air's")
    parser.add_argument("--before", type=parse_tolerance, metavar="RTOL:ATOL",
                        help="compare today's labelling with these earlier label tolerances")
    args = parser.parse_args()
    config = (methane_config(args.scale) if args.recipe == "methane"
              else config_for(args.mechanism, args.fuel, args.scale))
    if (config.rtol, config.atol) != (LABEL_TOLERANCES.rtol, LABEL_TOLERANCES.atol):
        raise SystemExit("the benchmark's config must label at LABEL_TOLERANCES")
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            compare_tolerances(config, args.before, args.workers[-1], tmp)
            return
        rates: dict[int, float] = {}
        states_file = None
        for k in args.workers:
            out = Path(tmp) / f"w{k}.h5"
            n_rows, seconds = run_pipeline(config, out, k)
            rates[k] = n_rows / seconds
            print(f"pipeline, {k} worker(s): {n_rows} rows in {seconds:.1f} s "
                  f"= {rates[k]:.0f} rows/s")
            states_file = states_file or out
        inputs, _, _ = read_dataset(states_file)
        mech = load_mechanism(config.mechanism)
        stepper = ReactorStep(mech.solution(), config.dt, Tolerances(config.rtol, config.atol),
                              reuse=True)
        bare = bare_rate(stepper, inputs)
    print(f"bare labelling loop, 1 core: {len(inputs)} rows = {bare:.0f} rows/s")
    for k, rate in rates.items():
        print(f"parallel efficiency with {k} worker(s): {rate / (k * bare):.2f} "
              f"(goal >= 0.80)")


if __name__ == "__main__":
    main()
