"""The training checkpoint ``<model>.ckpt``: weights, Adam state, the run's counters and the torch
RNG, as one safetensors file with JSON metadata (no pickle), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mechanisms.atomic_io import atomic_write
from mechanisms.errors import InputError


def checkpoint_path(model_path: Path) -> Path:
    """Where the checkpoint of the model file ``model_path`` is kept: ``<model_path>.ckpt``."""
    return model_path.with_name(model_path.name + ".ckpt")


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    state: dict[str, Any]) -> None:
    """Write ``model``'s weights, ``opt``'s state, ``state`` (JSON-able counters) and the torch
    RNG state to ``path``, replacing it atomically."""
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
    """Restore ``model``, ``opt`` and the torch RNG from ``path``; returns the saved ``state``.

    InputError (``resume: ...``) when the file is not a readable checkpoint.
    """
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
