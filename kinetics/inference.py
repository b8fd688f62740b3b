"""A network's forward pass for inference: rows in blocks that stay in cache, oneDNN GEMMs on CPU.

``BlockedForward(network)(z)`` equals ``network(z)`` for z ``[n, n_in]`` → ``[n, n_out]`` up to
float rounding. On CPU two things make it faster per core:

- rows go through the whole network a block at a time, so the activations of a block (about
  ``BLOCK_VALUES`` = 1024 rows × 400 float32 = 1.6 MB, a core's L2 cache; 256–8192 rows by the
  widest layer) stay in cache instead of streaming hundreds of MB through memory between layers
  (2–3× on a 3×400 network at 65,536 cells);
- the linear layers of an MLP run on oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``, the
  kernel torch's own CPU compiler emits) rather than MKL's (on one AMD EPYC core, 400×400 layers:
  ~260 against ~117 GFLOP/s in float32), with the activation that follows fused into it (GELU,
  SiLU, tanh: a few % more). A row's result does not depend on the other rows of its block,
  except that a block of one row takes a GEMV path that rounds differently, as MKL's does.

Without oneDNN, or for other architectures, the network's own forward runs on each block; on a
GPU it runs on the whole batch in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetics.models import MLP
from mechanisms.errors import InputError

BLOCK_VALUES = 1024 * 400  # activations of the widest layer per block
BLOCK_ROWS_RANGE = (256, 8192)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
# oneDNN's name for each activation it can fuse into the linear layer before it.
_FUSED = {nn.GELU: "gelu", nn.SiLU: "swish", nn.Tanh: "tanh"}


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def native_bfloat16_cpu() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16), where oneDNN's
    bfloat16 GEMM runs ~2× float32; elsewhere it is emulated and slower than float32."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16")) and _onednn_linear() is not None


def network_dtype(precision: str, model_precision: str, device: torch.device) -> torch.dtype:
    """The networks' dtype for ``precision`` (``auto``, ``float32`` or ``bfloat16``).

    ``auto``: the model's ``inference_precision`` when it is ``bfloat16`` and the device is a CPU
    that multiplies bfloat16 natively (:func:`native_bfloat16_cpu`), float32 otherwise (GPUs
    included: float32 is the GPU path). A model validated in bfloat16 records it; any other
    model runs float32 unless asked. InputError for an unknown name.
    """
    if precision == "auto":
        if model_precision == "bfloat16" and device.type == "cpu" and native_bfloat16_cpu():
            return torch.bfloat16
        return torch.float32
    if precision not in PRECISIONS:
        raise InputError(f"precision: must be auto, float32 or bfloat16, got {precision!r}")
    return PRECISIONS[precision]


def _onednn_linear():
    """oneDNN's fused linear op, or None where torch has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


class BlockedForward:
    """Evaluates ``network`` (in eval mode, on ``device`` in ``dtype``) block by block on CPU, in
    one call on a GPU (whose throughput wants large batches)."""

    def __init__(self, network: nn.Module, device: torch.device, dtype: torch.dtype):
        self.network = network
        self.block_rows = block_rows(network) if device.type == "cpu" else None
        linear = _onednn_linear() if device.type == "cpu" and dtype in _ONEDNN_DTYPES else None
        self._linear = linear if isinstance(network, MLP) else None
        self._layers = _fused_layers(list(network.net)) if self._linear else []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Network outputs ``[n, n_out]`` for inputs ``z`` ``[n, n_in]`` (the network's dtype)."""
        if self.block_rows is None or len(z) == 0:
            return self.network(z)
        blocks = [self._block(z[start:start + self.block_rows])
                  for start in range(0, len(z), self.block_rows)]
        return torch.cat(blocks) if len(blocks) > 1 else blocks[0]

    def _block(self, h: torch.Tensor) -> torch.Tensor:
        if self._linear is None:
            return self.network(h)
        for layer, fused in self._layers:
            if isinstance(layer, nn.Linear):
                h = self._linear(h, layer.weight, layer.bias, fused, [], "none")
            else:
                h = layer(h)
        return h


def block_rows(network: nn.Module) -> int:
    """Rows per block for ``network``: :data:`BLOCK_VALUES` over its widest layer, within
    :data:`BLOCK_ROWS_RANGE`."""
    widest = max((m.out_features for m in network.modules() if isinstance(m, nn.Linear)), default=1)
    low, high = BLOCK_ROWS_RANGE
    return min(high, max(low, BLOCK_VALUES // widest))


def _fused_layers(layers: list[nn.Module]) -> list[tuple[nn.Module, str]]:
    """``(layer, fused activation)`` pairs: each linear layer takes the activation after it
    (oneDNN's name, ``"none"`` for none); other layers stay as they are."""
    out: list[tuple[nn.Module, str]] = []
    for layer in layers:
        name = _FUSED.get(type(layer))
        if name and getattr(layer, "approximate", "none") == "none" and out \
                and isinstance(out[-1][0], nn.Linear) and out[-1][1] == "none":
            out[-1] = (out[-1][0], name)
        else:
            out.append((layer, "none"))
    return out


__all__ = ["BLOCK_ROWS_RANGE", "BLOCK_VALUES", "BlockedForward", "block_rows"]
