"""The trainer: stream a dataset, fit the network, keep the best model, resume from a checkpoint.

Read top to bottom: config → data facts and normalisation → model and optimiser → epochs of
(train blocks, validation) → best model file + checkpoint + CSV log. One process uses the CPU or
one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its share of the blocks with
DistributedDataParallel and rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.algorithms.join import Join
from tqdm import tqdm

from kinetics.data import (
    BlockReader,
    DatasetFacts,
    Normalisation,
    compute_normalisation,
    dataset_facts,
    features_and_targets,
)
from kinetics.integrator import resolve_device
from kinetics.model_file import ModelMeta, network_state, read_model_file, save_model
from kinetics.models import build_model
from kinetics.transforms import box_cox, box_cox_inverse, decode_output, encode_output
from mechanisms.atomic_io import atomic_write
from mechanisms.config_file import check_keys, read_yaml_mapping
from mechanisms.errors import InputError
from mechanisms.loading import inert_species, solution_from_yaml


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
        for name in ("epochs", "batch_size", "block_rows", "shuffle_blocks", "lr_decay_every"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise InputError(f"{name}: must be a whole number >= 1")
        if not 0 <= cfg.val_fraction < 1:
            raise InputError("val_fraction: must lie in [0, 1)")
        if not cfg.learning_rate > 0:
            raise InputError("learning_rate: must be > 0")
        if not (isinstance(cfg.route_below, (int, float)) and cfg.route_below > 0):
            raise InputError(f"route_below: must be a number > 0, got {cfg.route_below!r}")
        if not (isinstance(cfg.route_margin, (int, float)) and cfg.route_margin >= 1):
            raise InputError(f"route_margin: must be a number >= 1, got {cfg.route_margin!r}")
        if cfg.target_scaling not in (None, "zscore", "rms"):
            raise InputError(f"target_scaling: must be zscore or rms, got {cfg.target_scaling!r}")
        return cfg

    @property
    def effective_target_scaling(self) -> str:
        """The target scaling in force (``target_scaling``, or its default for the output)."""
        signed_power = bool(self.output_transform) and \
            self.output_transform.get("type") == "signed_power"
        return self.target_scaling or ("rms" if signed_power else "zscore")


# -- checkpoints (safetensors + JSON, no pickle) ---------------------------------------------------
def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, Any] = {}
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt_state["param_groups"]),
            "scalars": json.dumps(scalars)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer
                    ) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"resume: {path} is not a readable checkpoint ({exc})")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in json.loads(meta["scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


# -- the loop ----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model_path: str
    best_val_loss: float
    epochs_run: int
    seconds: float
    n_train: int
    n_val: int


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def train(dataset: str | Path, out: str | Path, config: TrainConfig, device: str = "auto",
          resume: bool = False, progress: bool = True, log_csv: str | Path | None = None
          ) -> TrainResult:
    """Train a surrogate on ``dataset`` and write the best model (by validation loss) to ``out``.

    A checkpoint ``<out>.ckpt`` is written after every epoch; ``resume=True`` continues from it.
    """
    started = time.perf_counter()
    rank, world = _distributed()
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device in ("cuda", "auto") and torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    out = Path(out)
    ckpt_path = out.with_name(out.name + ".ckpt")
    log_path = Path(log_csv) if log_csv else out.with_name(out.stem + ".log.csv")

    facts: DatasetFacts = dataset_facts(dataset)
    lam = config.box_cox_lambda
    main = _main_model(config, facts) if config.tail_of else None
    reader = BlockReader(facts, config.block_rows, config.sources, config.val_fraction, config.seed,
                         row_filter=main.row_filter if main else None)
    norm: Normalisation = compute_normalisation(reader, lam)
    if config.effective_target_scaling == "rms":
        norm = norm.zero_centred_targets()
    ns = len(facts.species)
    arch = {**config.model, "n_in": 2 + ns, "n_out": ns}
    model = build_model(arch).to(dev)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sched = torch.optim.lr_scheduler.StepLR(opt, config.lr_decay_every, config.lr_decay_factor)
    x_mean, x_std = norm.x_mean.to(dev), norm.x_std.to(dev)
    r_mean, r_std = norm.r_mean.to(dev), norm.r_std.to(dev)
    transform = config.output_transform
    gas = solution_from_yaml(facts.mechanism_yaml, facts.phase, facts.mechanism_sha256)
    inert = inert_species(gas)
    thermo = None
    if config.enthalpy_loss_weight > 0:
        from kinetics.thermo import Nasa7

        thermo = Nasa7(gas, dev)

    state = {"epoch": 0, "best_val": math.inf, "train_seconds": 0.0}
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"resume: no checkpoint {ckpt_path} to resume from")
        state = load_checkpoint(ckpt_path, model, opt)
        # The schedule continues where it stopped (the checkpoint's lr is already decayed).
        for group in opt.param_groups:
            group["initial_lr"] = config.learning_rate
            group["lr"] = config.learning_rate * config.lr_decay_factor ** (
                state["epoch"] // config.lr_decay_every)
        sched = torch.optim.lr_scheduler.StepLR(opt, config.lr_decay_every, config.lr_decay_factor,
                                                last_epoch=state["epoch"] - 1)

    def prepare(inputs: np.ndarray, targets: np.ndarray):
        x, r = features_and_targets(inputs, targets, lam, facts.dt_s)
        xz = ((x.to(dev) - x_mean) / x_std).float()
        rz = encode_output((r.to(dev) - r_mean) / r_std, transform)
        extra = (torch.as_tensor(inputs, dtype=torch.float64, device=dev),
                 torch.as_tensor(targets, dtype=torch.float64, device=dev))
        return xz, rz.float(), extra

    def loss_fn(pred: torch.Tensor, target: torch.Tensor, extra) -> torch.Tensor:
        loss = torch.nn.functional.l1_loss(pred, target)
        if config.mass_loss_weight > 0 or thermo is not None:
            inputs, targets = extra
            rate = decode_output(pred.double(), transform) * r_std + r_mean
            y_pred = box_cox_inverse(box_cox(inputs[:, 2:], lam) + facts.dt_s * rate, lam)
            if config.mass_loss_weight > 0:
                loss = loss + config.mass_loss_weight * ((y_pred.sum(dim=1) - 1.0) ** 2).mean().float()
            if thermo is not None:
                h0 = thermo.enthalpy(inputs[:, 0], inputs[:, 2:])
                h1 = thermo.enthalpy(targets[:, 0], y_pred)
                scale = thermo.cp(inputs[:, 0], inputs[:, 2:]) * 1000.0
                loss = loss + config.enthalpy_loss_weight * (torch.abs(h1 - h0) / scale).mean().float()
        return loss

    my_blocks = [b for b in range(reader.n_blocks) if b % world == rank]
    new_log = not (resume and log_path.exists())
    log_fh = open(log_path, "w" if new_log else "a", newline="") if rank == 0 else None
    writer = csv.writer(log_fh) if log_fh else None
    if writer and new_log:
        writer.writerow(["epoch", "train_loss", "val_loss", "learning_rate", "seconds"])
    epoch_bar = tqdm(total=config.epochs, initial=state["epoch"], unit="epoch", desc="training",
                     disable=not progress or rank != 0)
    epochs_run = 0
    finished = False
    try:
        while state["epoch"] < config.epochs:
            epoch_start = time.perf_counter()
            rng = np.random.default_rng([config.seed, state["epoch"]])
            order = list(rng.permutation(my_blocks))
            model.train()
            total, count = 0.0, 0
            # Ranks may hold different numbers of rows: Join lets the early finisher shadow the
            # collective calls of the others instead of hanging.
            uneven = contextlib.nullcontext()
            if world > 1:
                uneven = Join([net])
            with uneven:
                for start in range(0, len(order), config.shuffle_blocks):
                    group = [reader.read(b) for b in order[start:start + config.shuffle_blocks]]
                    inputs = np.concatenate([g[0][~g[2]] for g in group])
                    targets = np.concatenate([g[1][~g[2]] for g in group])
                    if len(inputs) == 0:
                        continue
                    perm = rng.permutation(len(inputs))
                    xz, rz, extra = prepare(inputs[perm], targets[perm])
                    for i in range(0, len(xz), config.batch_size):
                        sl = slice(i, i + config.batch_size)
                        loss = loss_fn(net(xz[sl]), rz[sl], (extra[0][sl], extra[1][sl]))
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += loss.item() * len(xz[sl])
                        count += len(xz[sl])
                        epoch_bar.set_postfix(loss=f"{total / max(count, 1):.4g}", refresh=False)
            sched.step()
            val = _validation_loss(model, reader, my_blocks, prepare, loss_fn, config.batch_size)
            if world > 1:
                v = torch.tensor([val], device=dev)
                dist.all_reduce(v)
                val = float(v) / world
            state["epoch"] += 1
            state["train_seconds"] += time.perf_counter() - epoch_start
            epochs_run += 1
            if rank == 0:
                if val < state["best_val"]:
                    state["best_val"] = val
                    if main:
                        main.write_with_tail(out, model, config, arch, norm, state)
                    else:
                        _write_model(out, model, config, arch, facts, norm, inert, state)
                save_checkpoint(ckpt_path, model, opt, state)
                writer.writerow([state["epoch"], f"{total / max(count, 1):.6g}", f"{val:.6g}",
                                 f"{opt.param_groups[0]['lr']:.3g}",
                                 f"{state['train_seconds']:.1f}"])
                log_fh.flush()
            epoch_bar.update(1)
            epoch_bar.set_postfix(loss=f"{total / max(count, 1):.4g}", val=f"{val:.4g}")
            stop = bool(config.max_minutes and state["train_seconds"] > 60 * config.max_minutes)
            if world > 1:  # every rank stops after the same epoch, or the others would hang
                flag = torch.tensor([float(stop)], device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                break
        finished = True
    finally:
        epoch_bar.close()
        if log_fh:
            log_fh.close()
        if world > 1:
            if finished:
                # Rank 0 is still writing files when the others leave the loop; tearing gloo
                # down while a peer is mid-operation can abort the process ("terminate called
                # without an active exception"), so every rank waits here first.
                dist.barrier()
            dist.destroy_process_group()
    return TrainResult(str(out), state["best_val"], epochs_run, time.perf_counter() - started,
                       norm.n_train, norm.n_val)


@torch.no_grad()
def _validation_loss(model, reader, blocks, prepare, loss_fn, batch_size) -> float:
    model.eval()
    total, count = 0.0, 0
    for b in blocks:
        inputs, targets, is_val = reader.read(b)
        if not is_val.any():
            continue
        xz, rz, extra = prepare(inputs[is_val], targets[is_val])
        for i in range(0, len(xz), 8 * batch_size):
            sl = slice(i, i + 8 * batch_size)
            total += float(loss_fn(model(xz[sl]), rz[sl], (extra[0][sl], extra[1][sl]))) * len(xz[sl])
            count += len(xz[sl])
    return total / count if count else float("nan")


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

    def row_filter(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """[n] bool: rows slow enough for the near-equilibrium network."""
        if len(inputs) == 0:
            return np.zeros(0, dtype=bool)
        _, r = features_and_targets(inputs, targets, self.lam, self.dt_s)
        scaled = (r / self.y_std)[:, self.active].abs()
        return (scaled.amax(dim=1) < self.limit).numpy()

    def write_with_tail(self, out: Path, tail, config: TrainConfig, arch, norm: Normalisation,
                        state: dict) -> None:
        """The main model's file with ``tail`` added as its near-equilibrium network."""
        extra = {k: v for k, v in self.tensors.items() if not k.startswith("net.")}
        extra.update({f"tail.net.{k}": v for k, v in tail.state_dict().items()})
        extra.update({"tail.norm.x_mean": norm.x_mean, "tail.norm.x_std": norm.x_std,
                      "tail.norm.y_mean": norm.r_mean, "tail.norm.y_std": norm.r_std})
        meta = dataclasses.replace(self.meta, description=config.description or self.meta.description,
                                   tail={
            "architecture": arch, "output_transform": config.output_transform,
            "route_below": config.route_below,
            "training": {"rows_train": norm.n_train, "rows_val": norm.n_val,
                         "epochs": state["epoch"], "val_loss": state["best_val"],
                         "config": dataclasses.asdict(config)}})
        save_model(out, self.network, meta, extra, self.mechanism_yaml)


def _main_model(config: TrainConfig, facts: DatasetFacts) -> _MainModel:
    """Read the ``tail_of`` model and check that it belongs to this dataset."""
    from kinetics.registry import resolve_model

    meta, tensors, yaml_text = read_model_file(resolve_model(config.tail_of))
    if meta.mechanism_sha256 != facts.mechanism_sha256:
        raise InputError(f"tail_of: {config.tail_of} was trained on mechanism sha256 "
                         f"{meta.mechanism_sha256[:12]}…, the dataset holds "
                         f"{facts.mechanism_sha256[:12]}…")
    if meta.dt_s != facts.dt_s or meta.box_cox_lambda != config.box_cox_lambda:
        raise InputError(f"tail_of: {config.tail_of} has dt {meta.dt_s:g} s and λ "
                         f"{meta.box_cox_lambda:g}; the dataset and config give dt "
                         f"{facts.dt_s:g} s and λ {config.box_cox_lambda:g}")
    if meta.tail:
        raise InputError(f"tail_of: {config.tail_of} already has a near-equilibrium network")
    active = torch.tensor([s not in meta.inert_species for s in meta.species])
    network = build_model(meta.architecture)
    network.load_state_dict(network_state(tensors))
    return _MainModel(meta, tensors, network, yaml_text, config.route_below * config.route_margin,
                      tensors["norm.y_std"], active, config.box_cox_lambda, facts.dt_s)


def _write_model(out: Path, model, config: TrainConfig, arch, facts: DatasetFacts,
                 norm: Normalisation, inert: list[str], state: dict) -> None:
    meta = ModelMeta(
        name=config.name, architecture=arch, box_cox_lambda=config.box_cox_lambda,
        dt_s=facts.dt_s, species=facts.species, mechanism_sha256=facts.mechanism_sha256,
        mechanism_source=facts.mechanism_source, phase=facts.phase,
        temperature_k=[max(norm.temperature_k[0], config.network_min_temperature_k or 0.0),
                       norm.temperature_k[1]],
        pressure_pa=norm.pressure_pa,
        frozen_temperature_k=config.frozen_temperature_k, inert_species=inert,
        output_transform=config.output_transform, description=config.description,
        training={"dataset": Path(facts.path).name, "rows_train": norm.n_train,
                  "rows_val": norm.n_val, "epochs": state["epoch"], "val_loss": state["best_val"],
                  "config": dataclasses.asdict(config),
                  "fuel": facts.sampler_config.get("fuel"),
                  "oxidizer": facts.sampler_config.get("oxidizer")})
    extra = {"norm.x_mean": norm.x_mean, "norm.x_std": norm.x_std, "norm.y_mean": norm.r_mean,
             "norm.y_std": norm.r_std, "domain.bct_min": norm.bct_min,
             "domain.bct_max": norm.bct_max}
    save_model(out, model, meta, extra, facts.mechanism_yaml)
