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
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kinetics.integrator import ROUTE_INDUCTION, ROUTE_MAIN, ROUTE_TAIL, ROUTE_UNRESOLVED, Integrator
from kinetics.model.registry import resolve_model
from kinetics.training.data import features_and_targets
from mechanisms.dataset_file import BlockReader, open_dataset
from mechanisms.state import mass_fractions, pressure, temperature

ROUTES = {"main": ROUTE_MAIN, "tail": ROUTE_TAIL, "induction": ROUTE_INDUCTION,
          "Cantera": ROUTE_UNRESOLVED}
BAND_K = 300.0


def band_figures(model: str, datasets: list[str], sources: list[str] | None, block_rows: int,
                 precision: str) -> dict[str, np.ndarray]:
    """Per row hotter than the model's frozen temperature: ``t`` (K), ``dt_model`` and
    ``dt_label`` (K over one step), ``route`` (ROUTE_* code; Cantera for out-of-domain
    fallback cells too)."""
    it = Integrator.load(resolve_model(model), device="cpu", dtype=precision)
    out: dict[str, list] = {"t": [], "dt_model": [], "dt_label": [], "route": []}
    for path in datasets:
        with open_dataset(path) as (_, facts):
            if abs(facts.dt_s - it.dt_s) > 1e-12 * it.dt_s:
                raise SystemExit(f"{path}: labels of dt {facts.dt_s:g} s, the model steps "
                                 f"{it.dt_s:g} s")
            reader = BlockReader(facts, block_rows, sources)
            for block in range(reader.n_blocks):
                rows = reader.read(block)
                hot = temperature(rows.inputs) >= it.meta.frozen_temperature_k
                if not hot.any():
                    continue
                inputs, targets = rows.inputs[hot], rows.targets[hot]
                result = it.advance(inputs, 1)
                x, _ = features_and_targets(inputs, targets, it.meta.box_cox_lambda, facts.dt_s)
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
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--model", default="ch4-air")
    ap.add_argument("--sources", nargs="+", help="only rows of these sources (default: all)")
    ap.add_argument("--block-rows", type=int, default=65536)
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    fig = band_figures(args.model, args.datasets, args.sources, args.block_rows, args.precision)
    print(f"{len(fig['t'])} rows of {', '.join(args.datasets)} stepped once by {args.model} "
          f"({args.precision} precision)")
    print_bands(fig)


if __name__ == "__main__":
    main()
