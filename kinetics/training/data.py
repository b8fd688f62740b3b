"""Training data from a dataset file: features, targets, the training/validation split and the
normalisation, streamed in bounded blocks through ``mechanisms.dataset_file.BlockReader``.

Features ``x = [T (K), ln(P/1 atm), BCT(Y)]`` (the state layout, with ln P for P) and targets
``r = (BCT(Y(t+dt)) − BCT(Y(t)))/dt`` (1/s in Box-Cox units), both ``[n, ...]`` float64. Rows are
split into training and validation by a seeded per-row draw over each whole block, so that the
split depends neither on how blocks are read nor on which sources are kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kinetics.networks.transforms import RunningMoments, box_cox, log_pressure
from mechanisms.dataset_file import BlockReader, DatasetFacts
from mechanisms.errors import InputError
from mechanisms.state import join_states, mass_fractions, pressure, state_width, temperature


def features_and_targets(inputs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                         lam: float, dt_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, 2+ns], r [n, ns])`` from state rows at t and t + dt (both ``[n, 2+ns]``)."""
    a = torch.as_tensor(inputs, dtype=torch.float64)
    b = torch.as_tensor(targets, dtype=torch.float64)
    bct = box_cox(mass_fractions(a), lam)
    x = join_states(temperature(a), log_pressure(pressure(a)), bct)
    r = (box_cox(mass_fractions(b), lam) - bct) / dt_s
    return x, r


class TrainingRows:
    """A dataset's rows block by block, each marked training or validation.

    ``row_filter`` (``(inputs, targets) → [n] bool``) keeps only some rows (those slow enough
    for a near-equilibrium network).
    """

    def __init__(self, reader: BlockReader, val_fraction: float = 0.1, seed: int = 0,
                 row_filter: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 row_mask: np.ndarray | None = None):
        self.reader = reader
        self.facts: DatasetFacts = reader.facts
        self.n_blocks = reader.n_blocks
        self.val_fraction = val_fraction
        self.seed = seed
        self.row_filter = row_filter
        # [n_rows] bool over the whole file: the rows to use (the source_rows setting)
        self.row_mask = row_mask

    def read(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(inputs [k, 2+ns], targets [k, 2+ns], is_validation [k] bool)`` of one block."""
        rows = self.reader.read(block)
        rng = np.random.default_rng([self.seed, block])
        is_val = (rng.random(rows.stop - rows.start) < self.val_fraction)[rows.kept]
        inputs, targets = rows.inputs, rows.targets
        if self.row_mask is not None:
            keep = self.row_mask[rows.start:rows.stop][rows.kept]
            inputs, targets, is_val = inputs[keep], targets[keep], is_val[keep]
        if self.row_filter is not None:
            keep = self.row_filter(inputs, targets)
            inputs, targets, is_val = inputs[keep], targets[keep], is_val[keep]
        return inputs, targets, is_val

    def blocks(self, order: list[int] | None = None) -> Iterator[tuple[np.ndarray, ...]]:
        for block in order if order is not None else range(self.n_blocks):
            yield self.read(block)


@dataclass
class Normalisation:
    """z-score statistics and the training domain, from the training rows."""

    x_mean: torch.Tensor
    x_std: torch.Tensor
    r_mean: torch.Tensor
    r_std: torch.Tensor
    bct_min: torch.Tensor
    bct_max: torch.Tensor
    temperature_k: list[float]
    pressure_pa: list[float]
    n_train: int
    n_val: int

    def zero_centred_targets(self) -> Normalisation:
        """The same statistics with targets scaled by their root mean square, not centred.

        A zero rate (a cell at equilibrium) then maps to a zero network output; with the
        signed-power output that is where the resolution is finest. With centring, a zero rate
        sits at −mean/std (about −0.5 for H2/air) and the smallest rates are lost in the noise.
        """
        rms = torch.sqrt(self.r_std ** 2 + self.r_mean ** 2)
        return dataclasses.replace(self, r_mean=torch.zeros_like(self.r_mean), r_std=rms)


def compute_normalisation(rows: TrainingRows, lam: float) -> Normalisation:
    """One pass over the file: moments of features and targets, ranges of T, P and BCT(Y)."""
    ns = len(rows.facts.species)
    xm, rm = RunningMoments(state_width(ns)), RunningMoments(ns)
    bmin = torch.full((ns,), np.inf, dtype=torch.float64)
    bmax = torch.full((ns,), -np.inf, dtype=torch.float64)
    t_lo = p_lo = np.inf
    t_hi = p_hi = -np.inf
    n_val = 0
    for inputs, targets, is_val in rows.blocks():
        n_val += int(is_val.sum())
        train = ~is_val
        if not train.any():
            continue
        x, r = features_and_targets(inputs[train], targets[train], lam, rows.facts.dt_s)
        xm.update(x)
        rm.update(r)
        bct = mass_fractions(x)  # the features keep the state layout: these columns are BCT(Y)
        bmin = torch.minimum(bmin, bct.min(dim=0).values)
        bmax = torch.maximum(bmax, bct.max(dim=0).values)
        t_k, p_pa = temperature(inputs[train]), pressure(inputs[train])
        t_lo, t_hi = min(t_lo, float(t_k.min())), max(t_hi, float(t_k.max()))
        p_lo, p_hi = min(p_lo, float(p_pa.min())), max(p_hi, float(p_pa.max()))
    if xm.n == 0:
        raise InputError(f"dataset: {rows.facts.path} has no training rows (of the chosen sources)")
    return Normalisation(xm.mean, xm.std, rm.mean, rm.std, bmin, bmax, [t_lo, t_hi],
                         [p_lo, p_hi], xm.n, n_val)
