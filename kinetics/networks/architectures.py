"""Network architectures, looked up by name in a registry (no if/else chains).

Every model maps z-scored features ``[n, n_in]`` to z-scored targets ``[n, n_out]``.
``build_model({"type": "mlp", "n_in": 12, "n_out": 10, "hidden": [400, 400, 400]})``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mechanisms.errors import InputError

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def register(name: str) -> Callable:
    def wrap(cls):
        MODEL_REGISTRY[name] = cls
        return cls

    return wrap


def _mlp(n_in: int, n_out: int, hidden: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@register("mlp")
class MLP(nn.Module):
    """A fully connected network with GELU (or ``activation``) between layers."""

    def __init__(self, n_in: int, n_out: int, hidden: list[int], activation: str = "gelu"):
        super().__init__()
        self.net = _mlp(n_in, n_out, hidden, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("mscale")
class MscaleDNN(nn.Module):
    """MscaleDNN (Liu, Cai & Xu, CiCP 2020): parallel sub-networks see the input scaled by
    ``scales``; their outputs are summed. High-frequency parts of the target are learnt by the
    sub-networks with large scales."""

    def __init__(self, n_in: int, n_out: int, hidden: list[int], activation: str = "gelu",
                 scales: list[float] | None = None):
        super().__init__()
        self.scales = list(scales or [1.0, 2.0, 4.0, 8.0])
        self.subnets = nn.ModuleList(_mlp(n_in, n_out, hidden, activation) for _ in self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(net(x * s) for net, s in zip(self.subnets, self.scales))


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build the network ``arch`` describes (``type`` picks the registry entry)."""
    arch = dict(arch)
    kind = arch.pop("type", "mlp")
    if kind not in MODEL_REGISTRY:
        raise InputError(f"model.type: unknown architecture '{kind}' "
                         f"(known: {', '.join(sorted(MODEL_REGISTRY))})")
    if arch.get("activation", "gelu") not in ACTIVATIONS:
        raise InputError(f"model.activation: unknown '{arch['activation']}' "
                         f"(known: {', '.join(ACTIVATIONS)})")
    for key in ("hidden", "scales"):
        values = arch.get(key)
        if values is not None and (not isinstance(values, (list, tuple)) or not values or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or v <= 0 for v in values)):
            raise InputError(f"model.{key}: must be a non-empty list of positive numbers, got "
                             f"{values!r}")
    if any(isinstance(v, float) and not float(v).is_integer() for v in arch.get("hidden") or []):
        raise InputError(f"model.hidden: layer widths must be whole numbers, got {arch['hidden']!r}")
    try:
        return MODEL_REGISTRY[kind](**arch)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"model: bad settings for '{kind}': {exc}")
