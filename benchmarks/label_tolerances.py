"""Label tolerances against the network's own error: what a looser CVODES tolerance changes in
what the networks learn, and what it saves.

    python benchmarks/label_tolerances.py DATASET.h5 --model ch4-air [--rows-per-source 80]
        [--tolerances 1e-10:1e-20 1e-9:1e-19 1e-8:1e-18 1e-7:1e-17 1e-6:1e-15]
        [--reference 1e-12:1e-24] [--markdown OUT.md]

A stratified draw of the dataset's input rows (every source alike) is labelled again, on one core,
at each candidate tolerance and at a tighter reference; the shipped model steps the same rows
(routing, fallback and enthalpy inversion included). Errors against the reference, per row:

- ``T``: |ΔT| after one step (K);
- ``Y``: max over species of |ΔY|;
- ``z``: max over species of |Δr|/σ_r, r = (BCT(Y') − BCT(Y))/dt, σ_r the model's target scale
  (the z-scored Box-Cox rate: tiny mass fractions count here although they vanish in Y);
- ``u``: the mean over species of |Δu|, u = the model's output transform of z: the quantity the
  L1 loss is taken on, so the network's figure is its training loss on these rows.

A tolerance changes nothing the networks learn when its error is far (≥ 100×) below the
network's in every column. Rows/s are per core (one process, one reactor per row, as the
dataset's labelling does).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from kinetics import Integrator
from kinetics.model.model_file import Y_MEAN, Y_STD, read_model_file
from kinetics.model.registry import resolve_model
from kinetics.networks.transforms import box_cox, encode_output
from mechanisms.dataset_file import open_dataset, read_dataset, read_sources
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import ReactorStep, Tolerances


@dataclass
class Errors:
    """Per-row errors of one labelling (or of the network) against the reference, ``[n]`` each."""

    t_k: np.ndarray
    y: np.ndarray
    z: np.ndarray
    u: np.ndarray


def parse_tolerance(text: str) -> Tolerances:
    rtol, atol = text.split(":")
    return Tolerances(float(rtol), float(atol))


def stratified_rows(path: str, per_source: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(inputs [n, 2+ns], source codes [n], source names)``: up to ``per_source`` rows of each
    source, drawn without replacement (seeded)."""
    inputs, _, sources = read_dataset(path)
    with open_dataset(path) as (_, facts):
        names = list(facts.source_names)
        codes = read_sources(facts)
    del sources
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(codes == c), min(per_source, int((codes == c).sum())),
                        replace=False) for c in np.unique(codes)]
    rows = np.sort(np.concatenate(picks))
    return inputs[rows], codes[rows], names


def learned_space(start: np.ndarray, end: np.ndarray, dt_s: float, lam: float,
                  r_mean: torch.Tensor, r_std: torch.Tensor, transform: dict | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(z, u)`` ``[n, ns]`` of the step ``start → end``: the z-scored Box-Cox rate and what the
    network learns of it (its output transform)."""
    a = torch.as_tensor(start[:, 2:], dtype=torch.float64)
    b = torch.as_tensor(end[:, 2:], dtype=torch.float64)
    z = ((box_cox(b, lam) - box_cox(a, lam)) / dt_s - r_mean) / r_std
    return z.numpy(), encode_output(z, transform).numpy()


def errors_of(start: np.ndarray, end: np.ndarray, ref_end: np.ndarray, space) -> Errors:
    z, u = space(start, end)
    z_ref, u_ref = space(start, ref_end)
    return Errors(np.abs(end[:, 0] - ref_end[:, 0]), np.abs(end[:, 2:] - ref_end[:, 2:]).max(axis=1),
                  np.abs(z - z_ref).max(axis=1), np.abs(u - u_ref).mean(axis=1))


def label(stepper: ReactorStep, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(start, end, cpu seconds, right-hand-side evaluations per row)``; a row that fails keeps
    NaN in ``end``. CPU time of this process (the machine's other load inflates it less than wall
    time); the evaluation count (CVODES' own plus its finite-difference Jacobians') is exact."""
    start = np.empty_like(states)
    end = np.full_like(states, np.nan)
    evaluations = 0
    began = time.process_time()
    for i, state in enumerate(states):
        try:
            start[i], end[i] = stepper.advance(state)
        except Exception:  # noqa: BLE001 - a failed row is counted, not fatal
            start[i] = state
        stats = stepper.last_net.solver_stats
        evaluations += stats["rhs_evals"] + stats["lin_rhs_evals"]
    return start, end, time.process_time() - began, evaluations / len(states)


def summary_line(name: str, e: Errors, rows_s: float | None, evaluations: float | None,
                 speedup: float | None) -> str:
    def q(x: np.ndarray, p: float) -> float:
        return float(np.nanpercentile(x, p))

    cost = (f"{rows_s:,.0f} | {evaluations:,.0f} | {speedup:.2f}×" if rows_s else "— | — | —")
    return (f"| {name} | {cost} | {q(e.t_k, 99):.1e} | {np.nanmax(e.t_k):.1e} | "
            f"{np.nanmax(e.y):.1e} | {q(e.z, 99):.1e} | {np.nanmax(e.z):.1e} | "
            f"{np.nanmean(e.u):.1e} | {np.nanmax(e.u):.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--model", default="ch4-air")
    parser.add_argument("--rows-per-source", type=int, default=80)
    parser.add_argument("--tolerances", nargs="+", type=parse_tolerance,
                        default=[parse_tolerance(t) for t in
                                 ("1e-10:1e-20", "1e-9:1e-19", "1e-8:1e-18", "1e-7:1e-17",
                                  "1e-6:1e-15")])
    parser.add_argument("--reference", type=parse_tolerance, default=parse_tolerance("1e-12:1e-24"))
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    states, codes, names = stratified_rows(args.dataset, args.rows_per_source)
    with open_dataset(args.dataset) as (_, facts):
        dt_s = facts.dt_s
        gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
    path = resolve_model(args.model)
    meta, tensors, _ = read_model_file(path)
    if abs(meta.dt_s - dt_s) > 1e-15:
        raise SystemExit(f"the model's dt {meta.dt_s} s is not the dataset's {dt_s} s")
    r_mean, r_std = tensors[Y_MEAN].double(), tensors[Y_STD].double()

    def space(start, end):
        return learned_space(start, end, dt_s, meta.box_cox_lambda, r_mean, r_std,
                             meta.output_transform)

    start, ref_end, ref_s, _ = label(ReactorStep(gas, dt_s, args.reference), states)
    ok = np.all(np.isfinite(ref_end), axis=1)
    start, ref_end, codes = start[ok], ref_end[ok], codes[ok]
    counts = ", ".join(f"{names[c]} {int((codes == c).sum())}" for c in np.unique(codes))
    print(f"{len(start)} rows ({counts}); "
          f"reference rtol {args.reference.rtol:g} / atol {args.reference.atol:g}: "
          f"{len(states) / ref_s:,.0f} rows/s")
    lines = ["| labels (rtol / atol) | rows/s (1 core, CPU time) | RHS evaluations a row | "
             "cost ratio (evaluations) | \\|ΔT\\| p99 (K) | \\|ΔT\\| max (K) | max \\|ΔY\\| | "
             "z p99 | z max | u mean | u max |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rates, evaluations, label_errors = {}, {}, {}
    for tol in args.tolerances:
        _, end, seconds, evaluations[tol] = label(ReactorStep(gas, dt_s, tol), start)
        rates[tol] = len(start) / seconds
        label_errors[tol] = errors_of(start, end, ref_end, space)
    base = args.tolerances[0]
    for tol in args.tolerances:
        lines.append(summary_line(f"{tol.rtol:g} / {tol.atol:g}", label_errors[tol], rates[tol],
                                  evaluations[tol], evaluations[base] / evaluations[tol]))
    integrator = Integrator.load(path, device="cpu")
    net_end = integrator.advance(start).states
    net = errors_of(start, np.asarray(net_end, dtype=np.float64), ref_end, space)
    lines.append(summary_line(f"network `{args.model}`", net, None, None, None))
    lines += ["", "Per source, u mean (the learnt quantity's L1 error) of the network and of each "
              "labelling, and the network's median \\|ΔT\\|:", "",
              "| source | network u | network \\|ΔT\\| median (K) | "
              + " | ".join(f"labels {t.rtol:g} / {t.atol:g}" for t in args.tolerances) + " |",
              "|---|---:|---:|" + "---:|" * len(args.tolerances)]
    for c in np.unique(codes):
        sel = codes == c
        lines.append(f"| {names[c]} | {np.nanmean(net.u[sel]):.3f} | "
                     f"{np.nanmedian(net.t_k[sel]):.2g} | "
                     + " | ".join(f"{np.nanmean(label_errors[t].u[sel]):.1e}" for t in args.tolerances)
                     + " |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
