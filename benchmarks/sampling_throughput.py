"""Sampling throughput: rows/s of the whole pipeline with 1 and k workers against the bare,
single-core Cantera labelling loop on the same states, measured in one run.

    python benchmarks/sampling_throughput.py [--workers 1 2] [--scale 1.0] [--mechanism h2o2.yaml]

Parallel efficiency = rows/s with k workers / (k × bare single-core rows/s). The pipeline does
more than label (it draws, filters, simulates the autoignition cases, journals and writes HDF5),
so the ratio is conservative. Flames are left out: one flame is one serial task.
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
from mechanisms.reactor import ReactorStep, Tolerances
from sampling.config import SamplingConfig
from sampling.pipeline import run_sampling


def config_for(mechanism: str, fuel: str, scale: float) -> SamplingConfig:
    rows = {"autoignition": 2000, "free_flame": 0, "counterflow": 0, "multiscale": 4000,
            "perturbed": 3000, "emcs": 1000}
    return SamplingConfig.from_dict({
        "mechanism": mechanism, "fuel": fuel, "oxidizer": "O2:1,N2:3.76",
        "phi": [0.5, 1.0, 2.0], "temperature_k": [1000, 1200, 1400], "pressure_atm": [1, 5],
        "seed": 1, "task_rows": 200, "rows": {k: int(v * scale) for k, v in rows.items()}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 2])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    parser.add_argument("--mechanism", default="h2o2.yaml")
    parser.add_argument("--fuel", default="H2:1")
    args = parser.parse_args()
    config = config_for(args.mechanism, args.fuel, args.scale)
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        states_file = None
        for k in args.workers:
            out = Path(tmp) / f"w{k}.h5"
            with DaskExecutor(workers=k) as executor:  # start-up is not timed
                started = time.perf_counter()
                summary = run_sampling(config, out, executor=executor, progress=False,
                                       log=lambda _msg: None)
                seconds = time.perf_counter() - started
            rates[k] = summary.n_rows / seconds
            print(f"pipeline, {k} worker(s): {summary.n_rows} rows in {seconds:.1f} s "
                  f"= {rates[k]:.0f} rows/s")
            states_file = states_file or out
        inputs, _, _ = read_dataset(states_file)
        mech = load_mechanism(config.mechanism)
        stepper = ReactorStep(mech.solution(), config.dt, Tolerances(config.rtol, config.atol))
        started = time.perf_counter()
        stepper.advance_all(inputs)
        seconds = time.perf_counter() - started
    bare = len(inputs) / seconds
    print(f"bare labelling loop, 1 core: {len(inputs)} rows in {seconds:.1f} s = {bare:.0f} rows/s")
    for k, rate in rates.items():
        print(f"parallel efficiency with {k} worker(s): {rate / (k * bare):.2f} "
              f"(goal >= 0.80)")


if __name__ == "__main__":
    main()
