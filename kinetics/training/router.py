"""The router (model file format 6): the main network's bfloat16 copy decides which cells skip it.

A model with a near-equilibrium network ("tail") runs its float32 main network on every cell,
only to find, for most cells of a flame (its burnt gas: 78-95 % of the reacting cells of the
methane premixed flames), that their rates are all below ``tail.route_below`` of the main target
scale, and to replace those rates with the tail's. With a router, the main network runs first
in bfloat16 (2.8× cheaper on a CPU with AMX), a cell whose bfloat16 rates are all below
``skip_main_below`` (≤ ``tail.route_below``; by default half of it, the margin) takes the
tail's rates at once, and the float32 main network runs on the other cells only. No rate comes
from bfloat16: only the route. A cell whose float32 rates are above ``route_below`` but whose
bfloat16 rates fall below ``skip_main_below`` is *misrouted*; the margin makes that rare and
keeps such a cell within the rates the tail was trained on.

:func:`set_router` writes a model with the router set (or removed) and checks it on datasets of
the model's mechanism first: the share of cells it sends to the tail, the misrouted share and
the largest float32 main rate among the cells it sends (``deepkin router`` prints them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kinetics.model.domain import DomainCoordinates
from kinetics.model.model_file import ModelMeta, read_model_file, resave_model
from kinetics.networks.transforms import box_cox, log_pressure
from mechanisms.dataset_check import verified_facts
from mechanisms.dataset_file import BlockReader
from mechanisms.errors import InputError
from mechanisms.loading import solution_from_yaml
from mechanisms.state import join_states, mass_fractions, pressure, temperature

DEFAULT_MARGIN = 2.0  # skip_main_below = tail.route_below / DEFAULT_MARGIN unless given


@dataclass
class RouterCheck:
    """The router's verdicts on the rows of one dataset that the step would route (above the
    frozen temperature, not fresh): shares of those rows; rates × the main target scale."""

    dataset: str
    rows: int
    tail_share: float  # rows the float32 main network routes to the tail
    skipped_share: float  # rows the router sends to the tail without the float32 main network
    misrouted_share: float  # skipped rows whose float32 main rates reach route_below
    worst_skipped_rate: float  # the largest float32 main rate among the skipped rows

    def summary(self, route_below: float) -> str:
        """One line: what the router skips and what it gets wrong on this dataset."""
        covered = self.skipped_share / self.tail_share if self.tail_share else 0.0
        return (f"{self.dataset}: {self.rows:,} rows; the router sends {100 * self.skipped_share:.1f}"
                f" % straight to the tail ({100 * covered:.1f} % of the {100 * self.tail_share:.1f}"
                f" % the float32 main network sends there); misrouted "
                f"{100 * self.misrouted_share:.4f} % (float32 rate >= route_below {route_below:g});"
                f" largest float32 rate among them {self.worst_skipped_rate:.3g}")


def set_router(model: str | Path, out: str | Path, skip_main_below: float | None = None,
               datasets: list[str | Path] | tuple[str | Path, ...] = (), max_rows: int = 200_000,
               off: bool = False, seed: int = 0) -> tuple[ModelMeta, list[RouterCheck]]:
    """Write the model file ``model`` (a path or shipped name) to ``out`` with its router set:
    ``skip_main_below`` × the main target scale (default tail.route_below / 2), or removed
    (``off``). Returns the new metadata and the router's verdicts on ``datasets`` (at most
    ``max_rows`` rows drawn from each), computed before writing. InputError for a model without
    a near-equilibrium network, one that runs its networks in bfloat16 already, a threshold out
    of range, or a dataset of another mechanism."""
    from kinetics.model.registry import resolve_model

    path = resolve_model(model)
    meta, tensors, yaml_text = read_model_file(path)
    checks: list[RouterCheck] = []
    if off:
        meta = dataclasses.replace(meta, router=None)
    else:
        if not meta.tail:
            raise InputError(f"model: {path} has no near-equilibrium network (tail): a router "
                             "has no network to send cells to")
        if meta.inference_precision != "float32":
            raise InputError(f"model: {path} runs its networks in {meta.inference_precision} "
                             "already (inference_precision): a bfloat16 router saves nothing")
        route_below = float(meta.tail["route_below"])
        skip = route_below / DEFAULT_MARGIN if skip_main_below is None else float(skip_main_below)
        if not (0 < skip <= route_below):
            raise InputError(f"skip-main-below: must lie in (0, tail.route_below = "
                             f"{route_below:g}], got {skip_main_below!r}")
        checks = [check_router(meta, tensors, yaml_text, d, skip, max_rows, seed)
                  for d in datasets]
        meta = dataclasses.replace(meta, router={
            "precision": "bfloat16", "skip_main_below": skip,
            "checked": [dataclasses.asdict(c) for c in checks]})
    resave_model(out, meta, tensors, yaml_text)
    return meta, checks


def check_router(meta: ModelMeta, tensors: dict[str, torch.Tensor], yaml_text: str,
                 dataset: str | Path, skip_main_below: float, max_rows: int = 200_000,
                 seed: int = 0) -> RouterCheck:
    """The router's verdicts (:class:`RouterCheck`) at ``skip_main_below`` on at most
    ``max_rows`` input rows of ``dataset``, against the float32 main network's own routing."""
    from kinetics.step.compiled_step import CompiledStep

    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    states = _draw_rows(dataset, meta, max_rows, np.random.default_rng(seed))
    states = states[states[:, 0] >= meta.frozen_temperature_k]  # the step never routes the rest
    if meta.induction and len(states):
        y = mass_fractions(torch.as_tensor(states, dtype=torch.float64))
        progress = DomainCoordinates(gas, *meta.streams).progress(y).numpy()
        states = states[progress >= float(meta.induction["progress_below"])]
    name = Path(dataset).name
    if not len(states):
        return RouterCheck(name, 0, 0.0, 0.0, 0.0, 0.0)
    x = _features(states, meta.box_cox_lambda)
    exact = _largest(CompiledStep.from_model(meta, tensors, gas, "cpu", torch.float32), x)
    rough = _largest(CompiledStep.from_model(meta, tensors, gas, "cpu", torch.bfloat16), x)
    route_below = float(meta.tail["route_below"])
    skipped = rough < skip_main_below
    n = len(states)
    worst = float(exact[skipped].max()) if bool(skipped.any()) else 0.0
    return RouterCheck(name, n, int((exact < route_below).sum()) / n, int(skipped.sum()) / n,
                       int((skipped & (exact >= route_below)).sum()) / n, worst)


def _draw_rows(dataset: str | Path, meta: ModelMeta, max_rows: int, rng: np.random.Generator
               ) -> np.ndarray:
    """Input states ``[m, 2+ns]`` (float64) of ``dataset``, each row kept with the same
    probability so that about ``max_rows`` are kept; InputError for another mechanism."""
    facts = verified_facts(dataset)
    if facts.mechanism_sha256 != meta.mechanism_sha256 or list(facts.species) != list(meta.species):
        raise InputError(f"data: {dataset} is of another mechanism (sha256 "
                         f"{facts.mechanism_sha256[:12]}…) than the model's "
                         f"({meta.mechanism_sha256[:12]}…)")
    keep = min(1.0, max_rows / max(facts.n_rows, 1))
    reader = BlockReader(facts)
    parts = [np.zeros((0, 2 + len(meta.species)))]
    for block in range(reader.n_blocks):
        inputs = reader.read(block).inputs
        parts.append(inputs[rng.random(len(inputs)) < keep])
    return np.concatenate(parts).astype(np.float64)


def _features(states: np.ndarray, lam: float) -> torch.Tensor:
    """The networks' inputs ``[m, 2+ns]`` ``[T, ln(P/1 atm), BCT(Y)]`` of states, Y clipped at 0
    and rescaled to ΣY = 1 as the step does."""
    a = torch.as_tensor(states, dtype=torch.float64)
    y = torch.clamp(mass_fractions(a), min=0.0)
    y = y / y.sum(dim=1, keepdim=True)
    return join_states(temperature(a), log_pressure(pressure(a)), box_cox(y, lam))


def _largest(step, x: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    """The largest |rate| ``[m]`` the step's main network predicts, × its target scale, inert
    species left out (what the step compares with ``route_below``)."""
    from kinetics.step.compiled_step import largest_scaled_rate

    out = []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            out.append(largest_scaled_rate(step.head(x[i:i + chunk]), step.head.y_std,
                                           step.inert, step.has_inert))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
