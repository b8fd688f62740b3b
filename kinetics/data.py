"""Training data streamed from a dataset file (see ``docs/dataset.md``) in bounded blocks.

Features ``x = [T (K), ln(P/1 atm), BCT(Y)]`` and targets ``r = (BCT(Y(t+dt)) − BCT(Y(t)))/dt``
(1/s in Box-Cox units), both ``[n, ...]`` float64. Rows are split into training and validation
by a seeded per-row draw, so that the split does not depend on how blocks are read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from kinetics.transforms import RunningMoments, box_cox, log_pressure
from mechanisms.errors import InputError


def features_and_targets(inputs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                         lam: float, dt_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, 2+ns], r [n, ns])`` from state rows at t and t + dt."""
    a = torch.as_tensor(inputs, dtype=torch.float64)
    b = torch.as_tensor(targets, dtype=torch.float64)
    bct = box_cox(a[:, 2:], lam)
    x = torch.cat([a[:, :1], log_pressure(a[:, 1:2]), bct], dim=1)
    r = (box_cox(b[:, 2:], lam) - bct) / dt_s
    return x, r


@dataclass
class DatasetFacts:
    """What a dataset file says about itself (read once)."""

    path: str
    n_rows: int
    species: list[str]
    dt_s: float
    mechanism_sha256: str
    mechanism_source: str
    mechanism_yaml: str
    phase: str
    source_names: list[str]
    sampler_config: dict


def dataset_facts(path: str | Path) -> DatasetFacts:
    """Open a dataset file and read its facts; InputError when it is not a usable dataset."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset: {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            a = h5.attrs
            n = min(int(h5["tasks/rows"][...].sum()), h5["inputs"].shape[0])
            return DatasetFacts(
                path=str(path), n_rows=n, species=json.loads(a["species_names"]),
                dt_s=float(a["dt"]), mechanism_sha256=str(a["mechanism_sha256"]),
                mechanism_source=str(a["mechanism_source"]),
                mechanism_yaml=h5["mechanism_yaml"].asstr()[()], phase=str(a["phase_name"]),
                source_names=json.loads(a["source_names"]),
                sampler_config=json.loads(a.get("sampler_config", "{}")))
    except (OSError, KeyError) as exc:
        raise InputError(f"dataset: {path} is not a readable deepkin dataset ({exc})")


class BlockReader:
    """Reads a dataset in blocks of ``block_rows`` rows, optionally only some sources.

    ``rank``/``world`` give each distributed process a disjoint share of the blocks.
    """

    def __init__(self, facts: DatasetFacts, block_rows: int = 65536,
                 sources: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                 row_filter: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
        self.facts = facts
        self.row_filter = row_filter  # (inputs, targets) → [n] bool: rows to keep
        self.block_rows = block_rows
        self.val_fraction = val_fraction
        self.seed = seed
        self.codes = None
        if sources:
            unknown = [s for s in sources if s not in facts.source_names]
            if unknown:
                raise InputError(f"sources: unknown source(s) {', '.join(unknown)} "
                                 f"(dataset has {', '.join(facts.source_names)})")
            self.codes = [facts.source_names.index(s) for s in sources]
        self.n_blocks = max(1, -(-facts.n_rows // block_rows))

    def read(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(inputs, targets, is_validation)`` of one block."""
        a = block * self.block_rows
        b = min(a + self.block_rows, self.facts.n_rows)
        with h5py.File(self.facts.path, "r") as h5:
            inputs = h5["inputs"][a:b]
            targets = h5["targets"][a:b]
            source = h5["source"][a:b] if self.codes is not None else None
        rng = np.random.default_rng([self.seed, block])
        is_val = rng.random(b - a) < self.val_fraction
        if source is not None:
            keep = np.isin(source, self.codes)
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


def compute_normalisation(reader: BlockReader, lam: float) -> Normalisation:
    """One pass over the file: moments of features and targets, ranges of T, P and BCT(Y)."""
    ns = len(reader.facts.species)
    xm, rm = RunningMoments(2 + ns), RunningMoments(ns)
    bmin = torch.full((ns,), np.inf, dtype=torch.float64)
    bmax = torch.full((ns,), -np.inf, dtype=torch.float64)
    t_lo = p_lo = np.inf
    t_hi = p_hi = -np.inf
    n_val = 0
    for inputs, targets, is_val in reader.blocks():
        n_val += int(is_val.sum())
        train = ~is_val
        if not train.any():
            continue
        x, r = features_and_targets(inputs[train], targets[train], lam, reader.facts.dt_s)
        xm.update(x)
        rm.update(r)
        bmin = torch.minimum(bmin, x[:, 2:].min(dim=0).values)
        bmax = torch.maximum(bmax, x[:, 2:].max(dim=0).values)
        t_lo, t_hi = min(t_lo, float(inputs[train, 0].min())), max(t_hi, float(inputs[train, 0].max()))
        p_lo, p_hi = min(p_lo, float(inputs[train, 1].min())), max(p_hi, float(inputs[train, 1].max()))
    if xm.n == 0:
        raise InputError(f"dataset: {reader.facts.path} has no training rows (of the chosen sources)")
    return Normalisation(xm.mean, xm.std, rm.mean, rm.std, bmin, bmax, [t_lo, t_hi],
                         [p_lo, p_hi], xm.n, n_val)
