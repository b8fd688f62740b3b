"""Where a model's induction network stops resolving the rates it serves.

    python benchmarks/regime_resolution.py DATASET.h5 [--model h2-air-flame] [--precision float32]

Every row of the dataset (hotter than the model's frozen temperature) that the model routes to
its induction network is predicted by it, and the rows are binned by the size of the predicted
rates in the induction network's own target scale (``max_k |rate_k| / y_std_k``, inert species
aside). Printed per half-decade bin: the rows, the median and 90th percentile of the error
relative to the label (``max_k |pred_k − label_k| / max_k |label_k|``, both scaled the same
way) and the median temperature. The bin where the median error reaches ~10 % is the network's
resolution floor: cells predicted below it are better stepped by Cantera (the recipe's
``fallback_below``). The rows include the training rows, so the figures are a lower bound of the
error on new cells.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kinetics.integrator import ROUTE_INDUCTION, ROUTE_UNRESOLVED, Integrator
from kinetics.model.registry import resolve_model
from kinetics.step.forward import NETWORK_PRECISIONS
from kinetics.training.data import features_and_targets
from mechanisms.dataset_file import BlockReader, open_dataset
from mechanisms.state import mass_fractions, pressure


def induction_errors(model: str, dataset: str, block_rows: int, precision: str = "auto"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predicted size, relative error, T in K)``, each ``[m]``, of the rows routed to the
    induction network, its networks in ``precision`` (auto: the model's own on this CPU)."""
    it = Integrator.load(resolve_model(model), device="cpu", dtype=precision)
    if it.induction is None:
        raise SystemExit(f"{model}: the model has no induction network")
    scale, active = it.induction.y_std, ~it.inert
    sizes, errors, temps = [], [], []
    with open_dataset(dataset) as (_, facts):
        reader = BlockReader(facts, block_rows)
        for block in range(reader.n_blocks):
            rows = reader.read(block)
            x, label = features_and_targets(rows.inputs, rows.targets, it.meta.box_cox_lambda,
                                            facts.dt_s)
            states = torch.as_tensor(rows.inputs, dtype=torch.float64)
            t = x[:, 0]
            rate, route = it.rates(t, pressure(states), x[:, 2:], mass_fractions(states))
            # Cells below the model's own floor (ROUTE_UNRESOLVED) were given the induction
            # network's rates before being marked for Cantera: they are part of its curve.
            keep = (((route == ROUTE_INDUCTION) | (route == ROUTE_UNRESOLVED))
                    & (t >= it.meta.frozen_temperature_k))
            if not bool(keep.any()):
                continue
            pred = (rate[keep] / scale)[:, active]
            lab = (label[keep] / scale)[:, active]
            sizes.append(pred.abs().amax(dim=1))
            errors.append((pred - lab).abs().amax(dim=1)
                          / lab.abs().amax(dim=1).clamp(min=1e-12))
            temps.append(t[keep])
    if not sizes:
        raise SystemExit(f"{dataset}: no row is routed to the induction network")
    return (torch.cat(sizes).numpy(), torch.cat(errors).numpy(), torch.cat(temps).numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default="h2-air-flame")
    ap.add_argument("--block-rows", type=int, default=65536)
    ap.add_argument("--precision", default="auto", choices=["auto", *NETWORK_PRECISIONS])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    size, error, temp = induction_errors(args.model, args.dataset, args.block_rows,
                                         args.precision)
    print(f"{len(size)} rows routed to the induction network of {args.model} "
          f"({args.precision} precision)")
    print("| predicted size (induction scale) | rows | median error | p90 error | median T (K) |")
    print("|---|---:|---:|---:|---:|")
    edges = 10.0 ** np.arange(-5.0, 1.01, 0.5)
    for lo, hi in zip(edges[:-1], edges[1:]):
        k = (size >= lo) & (size < hi)
        if k.any():
            print(f"| {lo:.1e} – {hi:.1e} | {int(k.sum())} | {np.median(error[k]):.3f} | "
                  f"{np.quantile(error[k], 0.9):.3f} | {np.median(temp[k]):.0f} |")


if __name__ == "__main__":
    main()
