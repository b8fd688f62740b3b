"""A model's one-step heat release against Cantera's, by temperature band, on a dataset's rows.

    python benchmarks/heat_release_bands.py ROWS.h5 [ROWS2.h5 …] --model ch4-air \\
        [--sources solver_states] [--precision float32]

Every row of each dataset (a labelled dataset: ``deepkin sample``; for the states a surrogate
visited in a solver, ``deepkin openfoam states`` then ``deepkin sample --rows solver_states=N``)
hotter than the model's frozen temperature is stepped once by the model, as a solver would step
it (its routing between networks and its Cantera fallback included), and its temperature
change compared with the label's. Printed per 300 K band: the rows, the ratio of the summed
temperature changes (model / Cantera: 1 is right, below 1 the model releases too little heat),
the median |ΔT| error in K, and the share of rows each network (or Cantera) served. The ratio
is the figure that moved a flame's speed in ``docs/training.md``: a reaction zone below 1 slows
the front, a preheat above 1 speeds it. These are single steps from given states, not a flame.

    python benchmarks/heat_release_bands.py --cases CASE [CASE2 …] --last-times 20 --model M

reads the states straight from OpenFOAM cases instead (a ``deepkin openfoam case`` run, e.g. a
refine round's flame or its ODE reference: every cell of the last ``--last-times`` written
times) and labels each with one Cantera step of the model's dt (the sampler's reactor and label
tolerances), so that a model can be judged on the states the true flame visits (the ODE run's)
and on those its own run visited.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np
import torch

from kinetics.integrator import ROUTE_INDUCTION, ROUTE_MAIN, ROUTE_TAIL, ROUTE_UNRESOLVED, Integrator
from kinetics.model.registry import resolve_model
from kinetics.step.forward import NETWORK_PRECISIONS
from kinetics.training.data import features_and_targets
from mechanisms.dataset_file import BlockReader, open_dataset
from mechanisms.state import mass_fractions, pressure, temperature

ROUTES = {"main": ROUTE_MAIN, "tail": ROUTE_TAIL, "induction": ROUTE_INDUCTION,
          "Cantera": ROUTE_UNRESOLVED}
BAND_K = 300.0


def band_figures(model: str, blocks: Iterator[tuple[np.ndarray, np.ndarray]], precision: str
                 ) -> dict[str, np.ndarray]:
    """Per labelled row ``(inputs, targets)`` of ``blocks`` hotter than the model's frozen
    temperature: ``t`` (K), ``dt_model`` and ``dt_label`` (K over one step), ``route`` (ROUTE_*
    code; Cantera for out-of-domain fallback cells too)."""
    it = Integrator.load(resolve_model(model), device="cpu", dtype=precision)
    out: dict[str, list] = {"t": [], "dt_model": [], "dt_label": [], "route": []}
    for all_inputs, all_targets in blocks:
        hot = temperature(all_inputs) >= it.meta.frozen_temperature_k
        if not hot.any():
            continue
        inputs, targets = all_inputs[hot], all_targets[hot]
        result = it.advance(inputs, 1)
        x, _ = features_and_targets(inputs, targets, it.meta.box_cox_lambda, it.dt_s)
        states = torch.as_tensor(inputs, dtype=torch.float64)
        _, route = it.rates(x[:, 0], pressure(states), x[:, 2:], mass_fractions(states))
        route = route.numpy().astype(np.int64)
        if result.fallback is not None:
            route[result.fallback] = ROUTE_UNRESOLVED
        out["t"].append(inputs[:, 0])
        out["dt_model"].append(temperature(result.states) - inputs[:, 0])
        out["dt_label"].append(targets[:, 0] - inputs[:, 0])
        out["route"].append(route)
    if not out["t"]:
        raise SystemExit("no row hotter than the model's frozen temperature")
    return {k: np.concatenate(v) for k, v in out.items()}


def dataset_blocks(paths: list[str], dt_s: float, sources: list[str] | None, block_rows: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(inputs, targets)`` blocks of labelled datasets (labels of ``dt_s`` s only)."""
    for path in paths:
        with open_dataset(path) as (_, facts):
            if abs(facts.dt_s - dt_s) > 1e-12 * dt_s:
                raise SystemExit(f"{path}: labels of dt {facts.dt_s:g} s, the model steps "
                                 f"{dt_s:g} s")
            reader = BlockReader(facts, block_rows, sources)
            for block in range(reader.n_blocks):
                rows = reader.read(block)
                yield rows.inputs, rows.targets


def case_blocks(cases: list[str], model: str, last_times: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One ``(inputs, targets)`` block per OpenFOAM case: every cell of its last ``last_times``
    written times in the model's species order (Y clipped at 0 and renormalised, as the chemistry
    library sends them), each labelled by one Cantera step of the model's dt."""
    from couplers.openfoam.states import case_states
    from kinetics.model.model_file import read_model_file
    from mechanisms.loading import solution_from_yaml
    from mechanisms.reactor import ReactorStep

    meta, _, yaml_text = read_model_file(resolve_model(model))
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    step = ReactorStep(gas, meta.dt_s)
    for case in cases:
        states, species, _ = case_states(case)
        times = _written_times(case)
        cells = len(states) // len(times)
        states = states[-last_times * cells:]
        order = [species.index(name) for name in meta.species]
        y = np.clip(states[:, 2:][:, order], 0.0, None)
        inputs = np.concatenate([states[:, :2], y / y.sum(axis=1, keepdims=True)], axis=1)
        inputs, targets, failed = step.advance_all(inputs)
        if failed:
            print(f"{case}: {failed} state(s) Cantera could not step, left out")
        yield inputs, targets


def _written_times(case: str) -> list[float]:
    from couplers.openfoam.foam import time_directories

    return [t for t, _ in time_directories(case)][1:]  # the first holds the initial fields


def print_bands(fig: dict[str, np.ndarray]) -> None:
    """The per-band table (markdown) and the all-rows line."""
    print("| T band (K) | rows | ΣΔT model / ΣΔT Cantera | median abs ΔT error (K) | "
          + " | ".join(f"{name} %" for name in ROUTES) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(ROUTES))
    lo_edge = BAND_K * np.floor(fig["t"].min() / BAND_K)
    for lo in np.arange(lo_edge, fig["t"].max() + BAND_K, BAND_K):
        k = (fig["t"] >= lo) & (fig["t"] < lo + BAND_K)
        if k.any():
            print(_line(f"{lo:.0f}–{lo + BAND_K:.0f}", fig, k))
    print(_line("all", fig, np.ones(len(fig["t"]), dtype=bool)))


def _line(label: str, fig: dict[str, np.ndarray], k: np.ndarray) -> str:
    label_sum = fig["dt_label"][k].sum()
    ratio = fig["dt_model"][k].sum() / label_sum if abs(label_sum) > 0 else float("nan")
    error = np.median(np.abs(fig["dt_model"][k] - fig["dt_label"][k]))
    shares = " | ".join(f"{100 * np.mean(fig['route'][k] == code):.1f}" for code in ROUTES.values())
    return f"| {label} | {int(k.sum())} | {ratio:.3f} | {error:.3g} | {shares} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="*", help="labelled datasets (or --cases)")
    ap.add_argument("--cases", nargs="+", help="OpenFOAM case folders instead of datasets")
    ap.add_argument("--last-times", type=int, default=20,
                    help="--cases: the written times read, the last ones (default 20)")
    ap.add_argument("--model", default="ch4-air")
    ap.add_argument("--sources", nargs="+", help="only rows of these sources (default: all)")
    ap.add_argument("--block-rows", type=int, default=65536)
    ap.add_argument("--precision", default="auto", choices=["auto", *NETWORK_PRECISIONS])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if bool(args.datasets) == bool(args.cases):
        ap.error("give labelled datasets or --cases, not both")
    if args.cases:
        blocks = case_blocks(args.cases, args.model, args.last_times)
        what = f"the last {args.last_times} times of {', '.join(args.cases)}"
    else:
        dt_s = Integrator.load(resolve_model(args.model), device="cpu").dt_s
        blocks = dataset_blocks(args.datasets, dt_s, args.sources, args.block_rows)
        what = ", ".join(args.datasets)
    fig = band_figures(args.model, blocks, args.precision)
    print(f"{len(fig['t'])} rows of {what} stepped once by {args.model} ({args.precision} precision)")
    print_bands(fig)


if __name__ == "__main__":
    main()
