"""The trainer: stream a dataset, fit the network, keep the best model, resume from a checkpoint.

:func:`train` reads top to bottom: set-up (processes, the dataset's facts, the rows to learn from
and their normalisation, network and optimiser, a resumed run's state), then epochs of
:func:`_train_epoch` and :func:`_validation_loss`, each followed by the best model file, the
checkpoint (``kinetics/training/checkpoint.py``) and a row of the CSV log. One process uses the CPU or
one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its share of the blocks with
DistributedDataParallel and rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch.distributed.algorithms.join import Join
from tqdm import tqdm

from kinetics.model.domain import DomainCoordinates, DomainSettings, OccupancyGrid, domain_record
from kinetics.model.model_file import (
    BCT_MAX,
    BCT_MIN,
    HEADS,
    OCCUPANCY_TENSOR,
    WEIGHTS,
    X_MEAN,
    X_STD,
    Y_MEAN,
    Y_STD,
    ModelMeta,
    network_state,
    non_network_tensors,
    read_model_file,
    save_model,
    scaling_tensors,
)
from kinetics.model.precisions import INFERENCE_PRECISIONS
from kinetics.networks.architectures import build_model
from kinetics.networks.transforms import box_cox, box_cox_inverse, decode_output, encode_output
from kinetics.step.device import resolve_device
from kinetics.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from kinetics.training.data import Normalisation, TrainingRows, compute_normalisation, features_and_targets
from kinetics.training.rollout import ModelStep, RolloutTerm, read_windows
from mechanisms.atomic_io import why_not_writable
from mechanisms.config_file import check_keys, is_number, read_yaml_mapping
from mechanisms.dataset_check import verified_facts, verify_rows
from mechanisms.dataset_file import BlockReader, DatasetFacts, read_sources, source_codes
from mechanisms.errors import DeepkinError, InputError, StorageError
from mechanisms.loading import inert_species, solution_from_yaml
from mechanisms.state import mass_fractions, pressure, state_width, temperature


@dataclass
class TrainConfig:
    """Training settings (YAML keys of ``deepkin train --config``)."""

    name: str = "surrogate"
    model: dict[str, Any] = field(default_factory=lambda: {"type": "mlp", "hidden": [400, 400, 400],
                                                           "activation": "gelu"})
    box_cox_lambda: float = 0.1
    output_transform: dict[str, Any] | None = None  # {"type": "signed_power", "lambda": 0.5}
    # "zscore": (rate − mean)/std; "rms": rate/rms, so that a zero rate (equilibrium) maps to a
    # zero output, where the signed-power output resolves small rates best. null: "rms" with the
    # signed-power output, "zscore" without.
    target_scaling: str | None = None
    sources: list[str] | None = None  # dataset sources to train on (default: all)
    # Rows to draw from each source (a seeded per-row draw, so about this many; sources not
    # named are left out): equal-sized datasets of different mixes from one file.
    source_rows: dict[str, int] | None = None
    epochs: int = 50
    batch_size: int = 1024
    learning_rate: float = 1e-3
    lr_decay_every: int = 10  # epochs between learning-rate decays
    lr_decay_factor: float = 0.5
    val_fraction: float = 0.1
    block_rows: int = 65536
    shuffle_blocks: int = 4  # blocks mixed in memory at once (bounds memory use)
    mass_loss_weight: float = 0.0  # penalty on (ΣY' − 1) before renormalisation
    enthalpy_loss_weight: float = 0.0  # penalty on h(T_label, Y') − h(T, Y), scaled by cp·1000 K
    # Weight of a row in the L1 loss: min(1 + |T_label − T| / this (K), heat_release_weight_max),
    # normalised over the batch, so rows whose step releases heat (a flame's reaction zone, an
    # ignition) count more than near-equilibrium and fresh rows, which the regime networks
    # serve. null: every row alike.
    heat_release_weight_k: float | None = None
    heat_release_weight_max: float = 10.0
    # Weight of a species' output in the L1 loss ({"NO": 10}: quoted, or YAML reads false;
    # every other output 1), the weights scaled to a mean of 1 over the outputs: a species whose
    # error adds up over a rollout (NO in burnt gas, which nothing pulls back) made to count more
    # than its share. null: every output alike.
    output_weights: dict[str, float] | None = None
    frozen_temperature_k: float = 500.0
    # Cells colder than this are stepped by Cantera, not the network (a regime it cannot serve,
    # such as slow induction near the second explosion limit); null: the training data's minimum.
    network_min_temperature_k: float | None = None
    # A near-equilibrium network for an existing model (path or shipped name): trained only on
    # rows whose rates, in the main model's target scale, are all below route_below ×
    # route_margin; the output file is the main model with this network added (format 2), and
    # cells the main network predicts below route_below take their rates from it.
    tail_of: str | None = None
    route_below: float = 0.03
    route_margin: float = 3.0
    # With tail_of: which regime network to add. "tail": near equilibrium (every slow row);
    # "induction": slow rows whose progress variable is below progress_below + progress_margin,
    # routed at inference when the cell's progress is below progress_below (fresh or barely
    # burnt: slow induction near the second explosion limit, a flame's preheat zone).
    regime: str = "tail"
    progress_below: float = 0.5
    progress_margin: float = 0.1
    # Induction only: cells it serves whose rates, in its own target scale, are all below this
    # are stepped by Cantera instead (its resolution floor: below it the network's error is as
    # large as the rates; benchmarks/regime_resolution.py measures where that lies). 0: none.
    fallback_below: float = 0.0
    # The precision the finished model is validated in and served at where the hardware
    # multiplies it natively (kinetics.step.forward.network_precision): float32, bfloat16 or
    # bfloat16-hidden (only the hidden layers in bfloat16). null: the
    # main model's (with tail_of), float32 otherwise. Set it once validation has shown it.
    inference_precision: str | None = None
    # The training domain recorded in the model (kinetics/model/domain.py, DomainSettings): the
    # occupancy grid over mixture fraction, dilution, T, P and progress by default.
    domain: dict[str, Any] | None = None
    # Start from a network of this model (path or shipped name) instead of random weights: its
    # main network, or with tail_of its network of this run's regime (tail or induction). A
    # fine-tuning stage, e.g. with a physics loss. Its architecture, mechanism, dt and λ must be
    # this run's, and its normalisation the one this run computes (same dataset, sources,
    # val_fraction and seed: the weights mean nothing on other scales) unless init_scales.
    init_from: str | None = None
    # With init_from: keep that network's scales (its input and target normalisation) instead
    # of this run's, so it can be fine-tuned on another dataset (a round of the DAgger-like loop:
    # replayed rows plus the solver's own states). A main network's recorded ranges (T, P, the
    # species box, the occupancy domain) are then the union of init_from's and this run's rows,
    # so a round never narrows what the model accepts.
    init_scales: bool = False
    # The rollout loss (kinetics/training/rollout.py): from the first state of each window of
    # this many consecutive steps along the dataset's rollout rows (sampled with rows.rollout),
    # the network steps its own state, and each step's output is scored against the rate back
    # onto Cantera's trajectory, so that drift and false fixed points cost loss. 0: off. A
    # regime network (tail_of) follows the windows whose first state the main network routes
    # to it.
    rollout_steps: int = 0
    rollout_loss_weight: float = 1.0  # the rollout term's weight beside the one-step loss
    # Windows per optimiser step (each costs rollout_steps network evaluations); null:
    # batch_size // rollout_steps, so the rollout term costs about what the one-step batch does.
    rollout_batch_windows: int | None = None
    max_minutes: float | None = None  # stop after this much training time
    seed: int = 0
    description: str = ""

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> TrainConfig:
        if path is None:
            return cls()
        return cls.from_dict(read_yaml_mapping(path, "config"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_keys(data, [f.name for f in dataclasses.fields(cls)], what="training setting")
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        """InputError naming the first setting of the wrong type or outside its range."""
        for name, least in _WHOLE_NUMBERS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name}: must be a whole number >= {least}, got {value!r}")
        for name, (rule, test) in _NUMBERS.items():
            value = getattr(self, name)
            if not (value is None and name in _OPTIONAL_NUMBERS) and not (
                    is_number(value) and test(value)):
                raise InputError(f"{name}: must be a number {rule}, got {value!r}")
        for name in ("name", "description", "tail_of", "init_from"):
            value = getattr(self, name)
            if not (isinstance(value, str) or (value is None and name in ("tail_of", "init_from"))):
                raise InputError(f"{name}: must be a string, got {value!r}")
        if not isinstance(self.model, dict):
            raise InputError(f"model: must be a mapping (type, hidden, …), got {self.model!r}")
        transform = self.output_transform
        if transform is not None and not (
                isinstance(transform, dict) and transform.get("type") == "signed_power"
                and is_number(transform.get("lambda")) and transform["lambda"] > 0):
            raise InputError(f"output_transform: must be null or {{type: signed_power, lambda: "
                             f"> 0}}, got {transform!r}")
        if self.sources is not None and not (isinstance(self.sources, list) and all(
                isinstance(s, str) for s in self.sources)):
            raise InputError(f"sources: must be a list of source names, got {self.sources!r}")
        if self.target_scaling not in (None, "zscore", "rms"):
            raise InputError(f"target_scaling: must be zscore or rms, got {self.target_scaling!r}")
        if self.source_rows is not None and not (
                isinstance(self.source_rows, dict) and all(
                    isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for k, v in self.source_rows.items())):
            raise InputError(f"source_rows: must map source names to whole numbers >= 0, got "
                             f"{self.source_rows!r}")
        if not isinstance(self.init_scales, bool):
            raise InputError(f"init_scales: must be true or false, got {self.init_scales!r}")
        if self.init_scales and self.init_from is None:
            raise InputError("init_scales: keeps init_from's scales; set init_from too")
        if self.regime not in ("tail", "induction"):
            raise InputError(f"regime: must be tail or induction, got {self.regime!r}")
        if self.fallback_below > 0 and (self.regime != "induction" or self.tail_of is None):
            raise InputError("fallback_below: only an induction network (regime: induction, "
                             f"with tail_of) has a resolution floor, got {self.fallback_below!r}")
        if self.inference_precision is not None and \
                self.inference_precision not in INFERENCE_PRECISIONS:
            raise InputError(f"inference_precision: must be {', '.join(INFERENCE_PRECISIONS)} or "
                             f"null, got {self.inference_precision!r}")
        weights = self.output_weights
        if isinstance(weights, dict) and any(isinstance(k, bool) for k in weights):
            # YAML 1.1 reads an unquoted NO, YES, ON or OFF as true/false
            raise InputError("output_weights: a species name was read as true/false; quote "
                             "it, e.g. {\"NO\": 10}")
        if weights is not None and not (isinstance(weights, dict) and weights and all(
                isinstance(k, str) and is_number(v) and v > 0 for k, v in weights.items())):
            raise InputError(f"output_weights: must map species names to numbers > 0, got "
                             f"{weights!r}")
        if self.rollout_batch_windows is not None and (
                isinstance(self.rollout_batch_windows, bool)
                or not isinstance(self.rollout_batch_windows, int)
                or self.rollout_batch_windows < 1):
            raise InputError(f"rollout_batch_windows: must be a whole number >= 1 or null, got "
                             f"{self.rollout_batch_windows!r}")
        if self.domain is not None and not isinstance(self.domain, dict):
            raise InputError(f"domain: must be a mapping (check, min_rows, …), got {self.domain!r}")
        DomainSettings.from_dict(self.domain)

    @property
    def effective_target_scaling(self) -> str:
        """The target scaling in force (``target_scaling``, or its default for the output)."""
        signed_power = bool(self.output_transform) and \
            self.output_transform.get("type") == "signed_power"
        return self.target_scaling or ("rms" if signed_power else "zscore")


# The whole-number settings and their least value; the other numbers, their rule and its test.
_WHOLE_NUMBERS = {"epochs": 1, "batch_size": 1, "block_rows": 1, "shuffle_blocks": 1,
                  "lr_decay_every": 1, "seed": 0, "rollout_steps": 0}
_NUMBERS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "learning_rate": ("> 0", lambda v: v > 0),
    "lr_decay_factor": ("in (0, 1]", lambda v: 0 < v <= 1),
    "box_cox_lambda": ("in (0, 1]", lambda v: 0 < v <= 1),
    "val_fraction": ("in [0, 1)", lambda v: 0 <= v < 1),
    "mass_loss_weight": (">= 0", lambda v: v >= 0),
    "enthalpy_loss_weight": (">= 0", lambda v: v >= 0),
    "frozen_temperature_k": (">= 0 (K)", lambda v: v >= 0),
    "network_min_temperature_k": ("> 0 (K) or null", lambda v: v > 0),
    "route_below": ("> 0", lambda v: v > 0),
    "route_margin": (">= 1", lambda v: v >= 1),
    "progress_below": ("in (0, 1]", lambda v: 0 < v <= 1),
    "progress_margin": (">= 0", lambda v: v >= 0),
    "fallback_below": (">= 0", lambda v: v >= 0),
    "max_minutes": ("> 0 or null", lambda v: v > 0),
    "heat_release_weight_k": ("> 0 (K) or null", lambda v: v > 0),
    "heat_release_weight_max": (">= 1", lambda v: v >= 1),
    "rollout_loss_weight": ("> 0", lambda v: v > 0),
}
_OPTIONAL_NUMBERS = ("network_min_temperature_k", "max_minutes", "heat_release_weight_k")


@dataclass
class TrainResult:
    model_path: str
    best_val_loss: float
    epochs_run: int
    seconds: float
    n_train: int
    n_val: int


def train(dataset: str | Path, out: str | Path, config: TrainConfig, device: str = "auto",
          resume: bool = False, progress: bool = True, log_csv: str | Path | None = None,
          allow_incomplete: bool = False) -> TrainResult:
    """Train a surrogate on ``dataset`` and write the best model (by validation loss) to ``out``.

    A checkpoint ``<out>.ckpt`` is written after every epoch; ``resume=True`` continues from it.
    Refused before any work (InputError): an ``out`` or log that cannot be written, a dataset
    that fails its checks (``mechanisms/dataset_check.py``: the cheap ones, then a scan of every
    row: non-finite values among them) and one whose sampling run did not finish (``complete``
    false) unless ``allow_incomplete``. Stopped with DeepkinError when a loss is not finite, and
    with StorageError when a file cannot be written; a run that ends without the model file
    raises DeepkinError rather than return.
    """
    started = time.perf_counter()
    out = Path(out)
    ckpt_path = checkpoint_path(out)
    log_path = Path(log_csv) if log_csv else out.with_name(out.stem + ".log.csv")
    for field_name, path in (("out", out), ("log", log_path)):
        reason = why_not_writable(path)
        if reason:
            raise InputError(f"{field_name}: cannot write {path}: {reason}")
    facts = verified_facts(dataset)
    if not facts.complete and not allow_incomplete:
        raise InputError(f"dataset: {facts.path} is incomplete (its sampling run did not finish: "
                         f"{facts.n_rows} rows); rerun its `deepkin sample` command to finish "
                         "it, or pass --allow-incomplete to train on the rows it holds")
    verify_rows(facts)  # every rank, before the process group: all refuse alike
    output_weights = species_output_weights(config.output_weights, facts)
    if config.rollout_steps and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("rollout_steps: the rollout loss runs in one training process; train "
                         "without torchrun, or with rollout_steps: 0")
    rank, world, dev = _start_processes(device)
    torch.manual_seed(config.seed)

    # Set-up: the data and its statistics, then the network, optimiser and a resumed run's state.
    main = _main_model(config, facts) if config.tail_of else None
    rows = TrainingRows(BlockReader(facts, config.block_rows, config.sources), config.val_fraction,
                        config.seed, row_filter=main.row_filter if main else None,
                        row_mask=_source_rows_mask(facts, config.source_rows, config.seed))
    norm = _normalisation(rows, config)
    ns = len(facts.species)
    arch = {**config.model, "n_in": state_width(ns), "n_out": ns}
    model = build_model(arch).to(dev)
    init = None
    if config.init_from:
        init = _start_from_model(model, config, arch, facts, norm)
        if config.init_scales:
            norm = init.scales_over(norm)
    net = _distributed_network(model, dev, world)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    state, schedule = _resume(ckpt_path, model, opt, config) if resume else _start(opt, config)
    objective = _Objective(config, facts, norm, dev, output_weights)
    rollout = _rollout_term(config, facts, main, dev) if config.rollout_steps else None
    best = _BestModel(out, config, arch, facts, norm, main, rows,
                      init if config.init_scales else None) if rank == 0 else None
    blocks = rows.reader.blocks_of_rank(rank, world)
    with _writing(log_path, out, ckpt_path):
        log = _EpochLog(log_path, append=resume) if rank == 0 else None
    bar = tqdm(total=config.epochs, initial=state["epoch"], unit="epoch", desc="training",
               disable=not progress or rank != 0)
    epochs_run = 0
    finished = False
    try:  # epochs: train, validate, then rank 0 writes the best model, the checkpoint, the log
        while state["epoch"] < config.epochs:
            epoch_start = time.perf_counter()
            rng = np.random.default_rng([config.seed, state["epoch"]])
            train_loss = _train_epoch(net, opt, rows, blocks, objective, config, rng, bar,
                                      uneven=world > 1, rollout=rollout)
            schedule.step()
            val = _validation_loss(model, rows, blocks, objective, config.batch_size, rollout)
            val = _mean_over_ranks(val, world, dev)
            mean_train = _mean_over_ranks(train_loss, world, dev)
            _check_losses(mean_train, val, norm.n_val, state["epoch"] + 1, out)
            # Without validation rows (val_fraction 0) the best epoch is the one of least
            # training loss.
            score = val if norm.n_val else mean_train
            state["epoch"] += 1
            state["train_seconds"] += time.perf_counter() - epoch_start
            epochs_run += 1
            if rank == 0:
                if score < state["best_val"]:
                    state["best_val"] = score
                    with _writing(out, out, ckpt_path):
                        best.write(model, state)
                with _writing(ckpt_path, out, ckpt_path):
                    save_checkpoint(ckpt_path, model, opt, state)
                with _writing(log_path, out, ckpt_path):
                    log.write(state, train_loss, val, opt.param_groups[0]["lr"])
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val:.4g}")
            if _time_is_up(config, state, world, dev):
                break
        finished = True
    finally:
        bar.close()
        if log:
            log.close()
        _stop_processes(world, finished)
    if rank == 0 and not out.is_file():
        raise DeepkinError(f"out: {out} does not exist after training: no epoch of this session "
                           f"scored below the best loss {state['best_val']:.5g} recorded in "
                           f"{ckpt_path}, and the model written then is gone; rerun without "
                           "--resume")
    return TrainResult(str(out), state["best_val"], epochs_run, time.perf_counter() - started,
                       norm.n_train, norm.n_val)


def _check_losses(train_loss: float, val_loss: float, n_val: int, epoch: int, out: Path) -> None:
    """DeepkinError when epoch ``epoch``'s mean training loss, or its validation loss (with
    validation rows), is NaN or infinite: the network diverged, and no later epoch can mend it."""
    for what, loss in (("training", train_loss), ("validation", val_loss if n_val else 0.0)):
        if not math.isfinite(loss):
            kept = (f"the model of the best epoch so far is kept in {out}" if out.is_file()
                    else "no model was written")
            raise DeepkinError(f"training: the {what} loss of epoch {epoch} is {loss} (the "
                               "network diverged: lower learning_rate, or check the loss weights "
                               f"and the model settings); {kept}")


@contextlib.contextmanager
def _writing(path: Path, out: Path, ckpt_path: Path):
    """Around writing one of the run's files: StorageError naming ``path`` and the reason
    (a full disk, a file-size limit, an I/O error) instead of the writer's own exception."""
    try:
        yield
    except (OSError, SafetensorError) as exc:
        resume = (f"rerun with --resume to continue from {ckpt_path}" if ckpt_path.is_file()
                  else "rerun the command")
        raise StorageError(f"out: cannot write {path} ({_io_reason(exc)}); make room and "
                           f"{resume}") from None


def _io_reason(exc: BaseException) -> str:
    """The operating system's reason in an OSError or a safetensors I/O error
    (``… I/O error: No space left on device (os error 28)``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    found = re.search(r"([A-Z][^:()]*) \(os error \d+\)", str(exc))
    return found[1] if found else (str(exc).splitlines() or [type(exc).__name__])[0][:120]


# -- set-up -----------------------------------------------------------------------------------------
def _source_rows_mask(facts: DatasetFacts, source_rows: dict[str, int] | None, seed: int
                      ) -> np.ndarray | None:
    """``[n_rows]`` bool: exactly ``source_rows[s]`` rows of each named source, drawn with
    ``seed`` (None: every row); InputError for a source the dataset lacks or holds fewer rows
    of than asked for."""
    if source_rows is None:
        return None
    codes = source_codes(facts, list(source_rows))
    sources = read_sources(facts)
    mask = np.zeros(len(sources), dtype=bool)
    rng = np.random.default_rng([seed, 7])
    for (name, want), code in zip(source_rows.items(), codes):
        rows = np.flatnonzero(sources == code)
        if want > len(rows):
            raise InputError(f"source_rows.{name}: {want} rows asked for, the dataset holds "
                             f"{len(rows)}")
        mask[rng.choice(rows, want, replace=False)] = True
    return mask


def _start_processes(device: str) -> tuple[int, int, torch.device]:
    """``(rank, world size, device)``; joins the process group when torchrun started several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device in ("cuda", "auto") and torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return rank, world, resolve_device(device)


def _normalisation(rows: TrainingRows, config: TrainConfig) -> Normalisation:
    """The statistics of the training rows, with the target scaling ``config`` asks for."""
    norm = compute_normalisation(rows, config.box_cox_lambda)
    if config.effective_target_scaling == "rms":
        norm = norm.zero_centred_targets()
    return norm


@dataclass
class _InitModel:
    """The network a fine-tuning run starts from (``init_from``): its model file's tensors and
    what its scales and recorded ranges are."""

    meta: ModelMeta
    tensors: dict[str, torch.Tensor]
    prefix: str  # "" (main network), TAIL or INDUCTION

    def scales_over(self, norm: Normalisation) -> Normalisation:
        """``norm`` (this run's rows) with the init network's scales; for a main network the
        T, P and species-box ranges of both."""
        t = self.tensors
        scaled = dataclasses.replace(
            norm, x_mean=t[self.prefix + X_MEAN].to(norm.x_mean.dtype),
            x_std=t[self.prefix + X_STD].to(norm.x_std.dtype),
            r_mean=t[self.prefix + Y_MEAN].to(norm.r_mean.dtype),
            r_std=t[self.prefix + Y_STD].to(norm.r_std.dtype))
        if self.prefix:
            return scaled
        t_lo, t_hi = self.meta.temperature_k
        p_lo, p_hi = self.meta.pressure_pa
        return dataclasses.replace(
            scaled, temperature_k=[min(t_lo, norm.temperature_k[0]), max(t_hi, norm.temperature_k[1])],
            pressure_pa=[min(p_lo, norm.pressure_pa[0]), max(p_hi, norm.pressure_pa[1])],
            bct_min=torch.minimum(norm.bct_min, t[BCT_MIN].to(norm.bct_min.dtype)),
            bct_max=torch.maximum(norm.bct_max, t[BCT_MAX].to(norm.bct_max.dtype)))

    def occupancy_over(self, record: dict[str, Any], occupancy: torch.Tensor | None
                       ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """This run's occupancy domain united with the init model's (InputError when the two
        were counted on other bins or streams)."""
        theirs = self.tensors.get(OCCUPANCY_TENSOR)
        if occupancy is None or theirs is None:
            return record, occupancy
        keys = ("coordinates", "edges", "min_rows", "dilate", "fuel", "oxidizer")
        mine, init = ({k: r.get(k) for k in keys} for r in (record, self.meta.domain or {}))
        if mine != init:
            raise InputError("init_scales: the init_from model's occupancy domain was counted on "
                             "other bins or streams than this run's domain settings; use its "
                             f"domain settings ({init})")
        united = occupancy.bool() | theirs.reshape(occupancy.shape).bool()
        return {**record, "domain_bins": int(united.sum()),
                "init_domain_bins": int(theirs.bool().sum())}, united.to(occupancy.dtype)


def _start_from_model(model: torch.nn.Module, config: TrainConfig, arch: dict[str, Any],
                      facts: DatasetFacts, norm: Normalisation) -> _InitModel:
    """Load the weights of ``config.init_from``'s network (main, or with tail_of this run's
    regime) into ``model``; InputError when that model was trained on another mechanism, dt,
    λ, architecture or (unless init_scales) normalisation, or has no such network."""
    meta, tensors, _ = _model_of_dataset("init_from", config.init_from, config, facts)
    where = f"init_from: {config.init_from}"
    prefix, record = "", {"architecture": meta.architecture,
                          "output_transform": meta.output_transform}
    if config.tail_of:
        prefix, record = HEADS[config.regime], getattr(meta, config.regime)
        if not record:
            raise InputError(f"{where} has no {config.regime} network to start from")
    what = f"{where} has the {prefix.rstrip('.') or 'main'} network"
    if record["architecture"] != arch:
        raise InputError(f"{what} {record['architecture']}, the config asks for {arch}")
    if record["output_transform"] != config.output_transform:
        raise InputError(f"{what} with output_transform {record['output_transform']}, the "
                         f"config {config.output_transform}")
    if not config.init_scales:
        ours = scaling_tensors(norm.x_mean, norm.x_std, norm.r_mean, norm.r_std, prefix)
        for key, value in ours.items():
            theirs = tensors[key].to(value.dtype)
            if not torch.allclose(theirs, value.cpu(), rtol=1e-6, atol=0.0):
                raise InputError(f"{where} was trained on other rows (its {key} differs "
                                 "from this run's): use the same dataset, sources, source_rows, "
                                 "val_fraction and seed, or set init_scales: true to keep its "
                                 "scales")
    model.load_state_dict(network_state(tensors, prefix + WEIGHTS))
    return _InitModel(meta, tensors, prefix)


def _distributed_network(model: torch.nn.Module, dev: torch.device, world: int
                         ) -> torch.nn.Module:
    """What the training steps call: ``model`` itself, or its DistributedDataParallel wrapper."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _start(opt: torch.optim.Optimizer, config: TrainConfig
           ) -> tuple[dict[str, Any], torch.optim.lr_scheduler.StepLR]:
    """The counters and learning-rate schedule of a new run."""
    state = {"epoch": 0, "best_val": math.inf, "train_seconds": 0.0}
    return state, torch.optim.lr_scheduler.StepLR(opt, config.lr_decay_every, config.lr_decay_factor)


def _resume(ckpt_path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
            config: TrainConfig) -> tuple[dict[str, Any], torch.optim.lr_scheduler.StepLR]:
    """Weights, optimiser, counters and RNG from the checkpoint; the schedule where it stopped."""
    if not ckpt_path.is_file():
        raise InputError(f"resume: no checkpoint {ckpt_path} to resume from")
    state = load_checkpoint(ckpt_path, model, opt)
    # The schedule continues where it stopped (the checkpoint's lr is already decayed).
    for group in opt.param_groups:
        group["initial_lr"] = config.learning_rate
        group["lr"] = config.learning_rate * config.lr_decay_factor ** (
            state["epoch"] // config.lr_decay_every)
    schedule = torch.optim.lr_scheduler.StepLR(opt, config.lr_decay_every, config.lr_decay_factor,
                                               last_epoch=state["epoch"] - 1)
    return state, schedule


@dataclass
class _Batch:
    """Network inputs ``x`` and targets ``r`` (float32), with their state rows (float64)."""

    x: torch.Tensor
    r: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: slice) -> _Batch:
        return _Batch(self.x[rows], self.r[rows], self.inputs[rows], self.targets[rows])


def species_output_weights(weights: dict[str, float] | None, facts: DatasetFacts
                           ) -> torch.Tensor | None:
    """``[ns]`` float32 loss weights of the outputs, ``weights``' species (1 for the others)
    scaled to a mean of 1, or None without ``weights``; InputError naming a species the
    dataset's mechanism lacks."""
    if not weights:
        return None
    index = {name: k for k, name in enumerate(facts.species)}
    vector = torch.ones(len(facts.species), dtype=torch.float64)
    for name, weight in weights.items():
        if name not in index:
            raise InputError(f"output_weights: {name} is not a species of the dataset's "
                             f"mechanism ({facts.mechanism_source}, {len(index)} species)")
        vector[index[name]] = float(weight)
    return (vector / vector.mean()).float()


class _Objective:
    """State rows → a :class:`_Batch` on the device, and the loss of a prediction for it: L1 on
    the encoded targets (each output weighted by ``output_weights``, each row by its heat
    release with ``heat_release_weight_k``) plus the optional ΣY and enthalpy penalties."""

    def __init__(self, config: TrainConfig, facts: DatasetFacts, norm: Normalisation,
                 dev: torch.device, output_weights: torch.Tensor | None = None):
        self.output_weights = None if output_weights is None else output_weights.to(dev)
        self.lam = config.box_cox_lambda
        self.dt_s = facts.dt_s
        self.dev = dev
        self.transform = config.output_transform
        self.mass_weight = config.mass_loss_weight
        self.enthalpy_weight = config.enthalpy_loss_weight
        self.heat_weight_k = config.heat_release_weight_k
        self.heat_weight_max = config.heat_release_weight_max
        self.x_mean, self.x_std = norm.x_mean.to(dev), norm.x_std.to(dev)
        self.r_mean, self.r_std = norm.r_mean.to(dev), norm.r_std.to(dev)
        self.thermo = None
        if self.enthalpy_weight > 0:
            from kinetics.step.thermo import Nasa7

            gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
            self.thermo = Nasa7(gas, dev)

    def batch(self, inputs: np.ndarray, targets: np.ndarray) -> _Batch:
        x, r = features_and_targets(inputs, targets, self.lam, self.dt_s)
        xz = ((x.to(self.dev) - self.x_mean) / self.x_std).float()
        rz = encode_output((r.to(self.dev) - self.r_mean) / self.r_std, self.transform)
        return _Batch(xz, rz.float(), torch.as_tensor(inputs, dtype=torch.float64, device=self.dev),
                      torch.as_tensor(targets, dtype=torch.float64, device=self.dev))

    def loss(self, pred: torch.Tensor, batch: _Batch) -> torch.Tensor:
        error = (pred - batch.r).abs()
        if self.output_weights is not None:
            error = error * self.output_weights
        if self.heat_weight_k is None:
            loss = error.mean()
        else:
            weight = heat_release_weights(batch.inputs, batch.targets, self.heat_weight_k,
                                          self.heat_weight_max).float()
            loss = (weight * error.mean(dim=1)).sum() / weight.sum()
        if self.mass_weight > 0 or self.thermo is not None:
            rate = decode_output(pred.double(), self.transform) * self.r_std + self.r_mean
            y0 = mass_fractions(batch.inputs)
            y_pred = box_cox_inverse(box_cox(y0, self.lam) + self.dt_s * rate, self.lam)
            if self.mass_weight > 0:
                loss = loss + self.mass_weight * ((y_pred.sum(dim=1) - 1.0) ** 2).mean().float()
            if self.thermo is not None:
                t0 = temperature(batch.inputs)
                h0 = self.thermo.enthalpy(t0, y0)
                h1 = self.thermo.enthalpy(temperature(batch.targets), y_pred)
                scale = self.thermo.cp(t0, y0) * 1000.0
                loss = loss + self.enthalpy_weight * (torch.abs(h1 - h0) / scale).mean().float()
        return loss


def heat_release_weights(inputs: torch.Tensor, targets: torch.Tensor, scale_k: float,
                         most: float) -> torch.Tensor:
    """``[n]`` loss weights of state rows ``[n, 2+ns]`` and their labels: min(1 + |ΔT| /
    ``scale_k``, ``most``), ΔT (K) the temperature change of the labelled step."""
    heat = (temperature(targets) - temperature(inputs)).abs()
    return torch.clamp(1.0 + heat / scale_k, max=most)


# -- one epoch, validation ------------------------------------------------------------------------
def _train_epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, rows: TrainingRows,
                 blocks: list[int], objective: _Objective, config: TrainConfig,
                 rng: np.random.Generator, bar: tqdm, uneven: bool,
                 rollout: RolloutTerm | None = None) -> float:
    """One pass over the training rows of ``blocks`` in a shuffled order, ``shuffle_blocks``
    blocks mixed at a time, each optimiser step's loss with ``rollout``'s term on a batch of its
    windows added; returns the mean training loss."""
    order = list(rng.permutation(blocks))
    net.train()
    total, count = 0.0, 0
    # Ranks may hold different numbers of rows: Join lets the early finisher shadow the
    # collective calls of the others instead of hanging.
    with Join([net]) if uneven else contextlib.nullcontext():
        for start in range(0, len(order), config.shuffle_blocks):
            group = [rows.read(b) for b in order[start:start + config.shuffle_blocks]]
            inputs = np.concatenate([g[0][~g[2]] for g in group])
            targets = np.concatenate([g[1][~g[2]] for g in group])
            if len(inputs) == 0:
                continue
            perm = rng.permutation(len(inputs))
            batch = objective.batch(inputs[perm], targets[perm])
            for i in range(0, len(batch), config.batch_size):
                part = batch[i:i + config.batch_size]
                loss = objective.loss(net(part.x), part)
                extra = rollout.training_loss(net, objective, rng) if rollout else None
                if extra is not None:
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(part)
                count += len(part)
                bar.set_postfix(loss=f"{total / max(count, 1):.4g}", refresh=False)
    return total / max(count, 1)


@torch.no_grad()
def _validation_loss(model: torch.nn.Module, rows: TrainingRows, blocks: list[int],
                     objective: _Objective, batch_size: int,
                     rollout: RolloutTerm | None = None) -> float:
    """Mean loss over the validation rows of ``blocks`` (NaN when there are none), plus
    ``rollout``'s weighted term over its validation windows."""
    model.eval()
    total, count = 0.0, 0
    for b in blocks:
        inputs, targets, is_val = rows.read(b)
        if not is_val.any():
            continue
        batch = objective.batch(inputs[is_val], targets[is_val])
        for i in range(0, len(batch), 8 * batch_size):
            part = batch[i:i + 8 * batch_size]
            total += float(objective.loss(model(part.x), part)) * len(part)
            count += len(part)
    loss = total / count if count else float("nan")
    extra = rollout.validation_loss(model, objective) if rollout else None
    return loss + extra if extra is not None else loss


def _rollout_term(config: TrainConfig, facts: DatasetFacts, main: _MainModel | None,
                  dev: torch.device) -> RolloutTerm:
    """The rollout loss of ``config`` on the dataset's rollout windows (InputError when it holds
    none); a regime network's (``main`` given) only on the windows whose first state the main
    network routes to it."""
    windows = read_windows(facts, config.rollout_steps, config.block_rows, config.val_fraction,
                           config.seed, _source_rows_mask(facts, config.source_rows, config.seed))
    if main is not None:
        windows = windows.select(main.routes_here(windows.states[windows.starts],
                                                  config.route_below, config.progress_below))
        if len(windows) == 0:
            raise InputError(f"rollout_steps: the main network ({config.tail_of}) routes no "
                             f"rollout window of {facts.path} to this {config.regime} network")
    gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
    step = ModelStep(gas, config.box_cox_lambda, facts.dt_s, dev)
    per_step = config.rollout_batch_windows or max(config.batch_size // config.rollout_steps, 1)
    return RolloutTerm(windows, step, config.rollout_loss_weight, per_step)


def _mean_over_ranks(value: float, world: int, dev: torch.device) -> float:
    if world == 1:
        return value
    v = torch.tensor([value], device=dev)
    dist.all_reduce(v)
    return float(v) / world


def _time_is_up(config: TrainConfig, state: dict[str, Any], world: int, dev: torch.device) -> bool:
    """Whether ``max_minutes`` of training time have passed (on any rank)."""
    stop = bool(config.max_minutes and state["train_seconds"] > 60 * config.max_minutes)
    if world > 1:  # every rank stops after the same epoch, or the others would hang
        flag = torch.tensor([float(stop)], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    return stop


def _stop_processes(world: int, finished: bool) -> None:
    if world == 1:
        return
    if finished:
        # Rank 0 is still writing files when the others leave the loop; tearing gloo down while
        # a peer is mid-operation can abort the process ("terminate called without an active
        # exception"), so every rank waits here first.
        dist.barrier()
    dist.destroy_process_group()


# -- what each epoch writes -----------------------------------------------------------------------
class _EpochLog:
    """The CSV log, one row per epoch; a resumed run appends to an existing log."""

    def __init__(self, path: Path, append: bool):
        new = not (append and path.exists())
        self._fh = open(path, "w" if new else "a", newline="")
        self._csv = csv.writer(self._fh)
        if new:
            self._csv.writerow(["epoch", "train_loss", "val_loss", "learning_rate", "seconds"])

    def write(self, state: dict[str, Any], train_loss: float, val_loss: float, lr: float) -> None:
        self._csv.writerow([state["epoch"], f"{train_loss:.6g}", f"{val_loss:.6g}", f"{lr:.3g}",
                            f"{state['train_seconds']:.1f}"])
        self._fh.flush()

    def close(self) -> None:
        # write() flushes every row, so closing fails only after a write failed (and was reported)
        with contextlib.suppress(OSError):
            self._fh.close()


class _BestModel:
    """Writes the best epoch's model file: the main model, or (``tail_of``) the main model's
    file with this network added as its near-equilibrium network."""

    def __init__(self, out: Path, config: TrainConfig, arch: dict[str, Any], facts: DatasetFacts,
                 norm: Normalisation, main: _MainModel | None, rows: TrainingRows,
                 init: _InitModel | None = None):
        self.out, self.config, self.arch, self.facts, self.norm, self.main = (
            out, config, arch, facts, norm, main)
        gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
        self.inert = inert_species(gas)
        # The occupancy domain is counted once, before the first epoch's model is written (with
        # init_scales, united with the init model's).
        self.domain = None if main else training_domain(rows, config, facts, gas)
        if self.domain is not None and init is not None:
            self.domain = init.occupancy_over(*self.domain)

    def write(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        if self.main:
            self.main.write_with_tail(self.out, model, self.config, self.arch, self.norm, state)
        else:
            self._write_main(model, state)

    def _write_main(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        config, facts, norm = self.config, self.facts, self.norm
        meta = ModelMeta(
            name=config.name, architecture=self.arch, box_cox_lambda=config.box_cox_lambda,
            dt_s=facts.dt_s, species=facts.species, mechanism_sha256=facts.mechanism_sha256,
            mechanism_source=facts.mechanism_source, phase=facts.phase,
            temperature_k=[max(norm.temperature_k[0], config.network_min_temperature_k or 0.0),
                           norm.temperature_k[1]],
            pressure_pa=norm.pressure_pa,
            frozen_temperature_k=config.frozen_temperature_k, inert_species=self.inert,
            output_transform=config.output_transform, description=config.description,
            inference_precision=config.inference_precision or "float32",
            training={"dataset": Path(facts.path).name, "rows_train": norm.n_train,
                      "rows_val": norm.n_val, "epochs": state["epoch"],
                      "val_loss": state["best_val"], "config": dataclasses.asdict(config),
                      "fuel": facts.sampler_config.get("fuel"),
                      "oxidizer": facts.sampler_config.get("oxidizer")})
        extra = {**scaling_tensors(norm.x_mean, norm.x_std, norm.r_mean, norm.r_std),
                 BCT_MIN: norm.bct_min, BCT_MAX: norm.bct_max}
        if self.domain is not None:
            meta.domain, occupancy = self.domain
            if occupancy is not None:
                extra[OCCUPANCY_TENSOR] = occupancy
        save_model(self.out, model, meta, extra, facts.mechanism_yaml)


def training_domain(rows: TrainingRows, config: TrainConfig, facts: DatasetFacts, gas
                    ) -> tuple[dict[str, Any], torch.Tensor] | None:
    """``(domain metadata, occupancy tensor)`` of the training rows (format 4), or None with
    ``domain.check: box`` (the per-species box alone, as formats 1-3).

    The fuel and oxidiser streams are the dataset's (its last sampling run's); the bins are
    ``config.domain``'s (:class:`~kinetics.model.domain.DomainSettings`). InputError when the dataset
    does not record its streams.
    """
    settings = DomainSettings.from_dict(config.domain)
    if settings.check == "box":
        return None
    fuel, oxidizer = facts.sampler_config.get("fuel"), facts.sampler_config.get("oxidizer")
    if not fuel or not oxidizer:
        raise InputError(f"dataset: {facts.path} records no fuel and oxidiser streams; the "
                         "occupancy domain needs them (or set domain: {check: box})")
    coords = DomainCoordinates(gas, fuel, oxidizer)
    grid = OccupancyGrid(settings.edges())
    counts = None
    for inputs, _, is_val in rows.blocks():
        train_rows = torch.as_tensor(inputs[~is_val], dtype=torch.float64)
        if len(train_rows):
            counts = grid.count(coords.coordinates(temperature(train_rows), pressure(train_rows),
                                                   mass_fractions(train_rows)), counts)
    if counts is None:
        counts = torch.zeros(int(np.prod(grid.shape)), dtype=torch.int64)
    occupancy = grid.mask(counts, settings.min_rows, settings.dilate)
    # With check none the grid is counted (its figures are recorded) but not stored.
    return domain_record(settings, coords, counts, occupancy), \
        occupancy if settings.check == "occupancy" else None


@dataclass
class _MainModel:
    """The model a near-equilibrium network is trained for (``tail_of``)."""

    meta: ModelMeta
    tensors: dict[str, torch.Tensor]
    network: torch.nn.Module
    mechanism_yaml: str
    limit: float  # rows are kept when every |rate| / y_std is below this
    y_std: torch.Tensor
    active: torch.Tensor  # [ns] bool: species that are not inert
    lam: float
    dt_s: float
    regime: str = "tail"
    # induction: rows are kept when their progress is below this too (kinetics/model/domain.py)
    progress_limit: float = 1.0
    coordinates: DomainCoordinates | None = None

    def row_filter(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """[n] bool: rows slow enough for the regime network (and, for the induction network,
        barely burnt)."""
        if len(inputs) == 0:
            return np.zeros(0, dtype=bool)
        _, r = features_and_targets(inputs, targets, self.lam, self.dt_s)
        scaled = (r / self.y_std)[:, self.active].abs()
        keep = scaled.amax(dim=1) < self.limit
        if self.coordinates is not None:
            y = mass_fractions(torch.as_tensor(inputs, dtype=torch.float64))
            keep &= self.coordinates.progress(y) < self.progress_limit
        return keep.numpy()

    def routes_here(self, states: np.ndarray, route_below: float, progress_below: float
                    ) -> np.ndarray:
        """[n] bool: the states ``[n, 2+ns]`` the main network routes to this regime network at
        inference, as :class:`~kinetics.step.compiled_step.CompiledStep` routes a cell: its
        rates, in its target scale, all below ``route_below`` over the active species; for an
        induction network, progress below ``progress_below`` too; for a near-equilibrium
        network, not those that the model's induction network (if it has one) takes first."""
        if len(states) == 0:
            return np.zeros(0, dtype=bool)
        x, _ = features_and_targets(states, states, self.lam, self.dt_s)
        xz = ((x - self.tensors[X_MEAN]) / self.tensors[X_STD]).float()
        self.network.eval()
        with torch.no_grad():
            out = torch.cat([self.network(xz[i:i + 65536]) for i in range(0, len(xz), 65536)])
        rate = decode_output(out.double(), self.meta.output_transform) * self.y_std \
            + self.tensors[Y_MEAN]
        largest = (rate / self.y_std)[:, self.active].abs().amax(dim=1)
        keep = largest < route_below
        y = mass_fractions(torch.as_tensor(states, dtype=torch.float64))
        if self.regime == "induction":
            keep &= self.coordinates.progress(y) < progress_below
        elif self.meta.induction:
            induction = self.meta.induction
            gas = solution_from_yaml(self.mechanism_yaml, self.meta.phase,
                                     self.meta.mechanism_sha256)
            fresh = DomainCoordinates(gas, *self.meta.streams).progress(y) \
                < float(induction["progress_below"])
            keep &= ~(fresh & (largest < float(induction["route_below"])))
        return keep.numpy()

    def write_with_tail(self, out: Path, tail, config: TrainConfig, arch, norm: Normalisation,
                        state: dict) -> None:
        """The main model's file with ``tail`` added as its regime network (``tail.*`` or
        ``induction.*``; the regime networks the file holds already stay)."""
        head = HEADS[self.regime]
        extra = non_network_tensors(self.tensors)
        extra.update({head + WEIGHTS + k: v for k, v in tail.state_dict().items()})
        extra.update(scaling_tensors(norm.x_mean, norm.x_std, norm.r_mean, norm.r_std, head))
        record = {"architecture": arch, "output_transform": config.output_transform,
                  "route_below": config.route_below,
                  "training": {"rows_train": norm.n_train, "rows_val": norm.n_val,
                               "epochs": state["epoch"], "val_loss": state["best_val"],
                               "config": dataclasses.asdict(config)}}
        if self.regime == "induction":
            record["progress_below"] = config.progress_below
            record["fallback_below"] = config.fallback_below
        meta = dataclasses.replace(self.meta, **{self.regime: record},
                                   description=config.description or self.meta.description,
                                   inference_precision=(config.inference_precision
                                                        or self.meta.inference_precision))
        save_model(out, self.network, meta, extra, self.mechanism_yaml)


def _model_of_dataset(setting: str, name: str, config: TrainConfig, facts: DatasetFacts
                      ) -> tuple[ModelMeta, dict[str, torch.Tensor], str]:
    """``(meta, tensors, mechanism_yaml)`` of the model ``name`` (a path or shipped name) that
    the ``setting`` key names; InputError when it was trained on another mechanism, dt or λ
    than this dataset and config."""
    from kinetics.model.registry import resolve_model

    meta, tensors, yaml_text = read_model_file(resolve_model(name))
    if meta.mechanism_sha256 != facts.mechanism_sha256:
        raise InputError(f"{setting}: {name} was trained on mechanism sha256 "
                         f"{meta.mechanism_sha256[:12]}…, the dataset holds "
                         f"{facts.mechanism_sha256[:12]}…")
    if meta.dt_s != facts.dt_s or meta.box_cox_lambda != config.box_cox_lambda:
        raise InputError(f"{setting}: {name} has dt {meta.dt_s:g} s and λ "
                         f"{meta.box_cox_lambda:g}; the dataset and config give dt "
                         f"{facts.dt_s:g} s and λ {config.box_cox_lambda:g}")
    return meta, tensors, yaml_text


def _main_model(config: TrainConfig, facts: DatasetFacts) -> _MainModel:
    """Read the ``tail_of`` model and check that it belongs to this dataset."""
    meta, tensors, yaml_text = _model_of_dataset("tail_of", config.tail_of, config, facts)
    if getattr(meta, config.regime):
        what = {"tail": "a near-equilibrium", "induction": "an induction"}[config.regime]
        raise InputError(f"tail_of: {config.tail_of} already has {what} network")
    active = torch.tensor([s not in meta.inert_species for s in meta.species])
    network = build_model(meta.architecture)
    network.load_state_dict(network_state(tensors))
    coordinates, progress_limit = None, 1.0
    if config.regime == "induction":
        gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
        fuel, oxidizer = meta.streams
        if not fuel or not oxidizer:
            raise InputError(f"tail_of: {config.tail_of} records no fuel and oxidiser; an "
                             "induction network needs them for the progress variable")
        coordinates = DomainCoordinates(gas, fuel, oxidizer)
        progress_limit = config.progress_below + config.progress_margin
    return _MainModel(meta, tensors, network, yaml_text, config.route_below * config.route_margin,
                      tensors[Y_STD], active, config.box_cox_lambda, facts.dt_s,
                      config.regime, progress_limit, coordinates)
