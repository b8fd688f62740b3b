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
  SiLU, tanh: a few % more). A row's result does not depend on the other rows of its block;
  a lone row goes through as two (itself twice), since a block of one row would take a GEMV
  path that rounds differently (as MKL's does): a cell's step is the same bits alone or in a
  batch.

Without oneDNN, or for other architectures, the network's own forward runs on each block; on a
GPU it runs on the whole batch in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetics.networks.architectures import MLP
from mechanisms.errors import InputError

BLOCK_VALUES = 1024 * 400  # activations of the widest layer per block
BLOCK_ROWS_RANGE = (256, 8192)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
PACK_BATCH_ROWS = 1024  # the batch size oneDNN's weight layout is chosen for (any size runs)
# oneDNN's name for each activation it can fuse into the linear layer before it.
_FUSED = {nn.GELU: "gelu", nn.SiLU: "swish", nn.Tanh: "tanh"}


# The precisions a model's networks run in, by name: (the dtype of the first and last layers,
# which see the scaled features and give the outputs; the dtype of the layers between, None: the
# same). "bfloat16-hidden" keeps the features and outputs float32 and runs the hidden-to-hidden
# layers (most of the arithmetic of a 3×400 network) in bfloat16: rounding a scaled temperature
# to bfloat16's 8 bits moves it by up to 1.3 K at 1200 K (ch4-air's scales), which a rich
# ignition's delay feels (docs/training.md, "bfloat16 in the hidden layers").
NETWORK_PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "float32": (torch.float32, None), "bfloat16": (torch.bfloat16, None),
    "bfloat16-hidden": (torch.float32, torch.bfloat16)}


def native_bfloat16_cpu() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16), where oneDNN's
    bfloat16 GEMM runs ~2× float32; elsewhere it is emulated and slower than float32."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16")) and _onednn_linear() is not None


def network_precision(precision: str, model_precision: str, device: torch.device) -> str:
    """The networks' precision (a key of :data:`NETWORK_PRECISIONS`) for ``precision`` (``auto``
    or one of those names).

    ``auto``: the model's ``inference_precision`` when it uses bfloat16 (``bfloat16`` or
    ``bfloat16-hidden``) and the device is a CPU that multiplies bfloat16 natively
    (:func:`native_bfloat16_cpu`), float32 otherwise (GPUs included: float32 is the GPU path). A
    model validated in a bfloat16 precision records it; any other model runs float32 unless
    asked. InputError for an unknown name.
    """
    if precision == "auto":
        if (model_precision in NETWORK_PRECISIONS and model_precision != "float32"
                and device.type == "cpu" and native_bfloat16_cpu()):
            return model_precision
        return "float32"
    if precision not in NETWORK_PRECISIONS:
        raise InputError(f"precision: must be auto, {', '.join(NETWORK_PRECISIONS)}, got "
                         f"{precision!r}")
    return precision


def precision_name(dtype: torch.dtype, hidden_dtype: torch.dtype | None = None) -> str:
    """The name of networks in ``dtype`` with hidden layers in ``hidden_dtype`` (None: ``dtype``):
    a key of :data:`NETWORK_PRECISIONS`, or the dtype's own name (``float64``)."""
    pair = (dtype, None if hidden_dtype in (None, dtype) else hidden_dtype)
    for name, dtypes in NETWORK_PRECISIONS.items():
        if dtypes == pair:
            return name
    return str(dtype).removeprefix("torch.")


def network_dtype(precision: str, model_precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the networks' inputs and outputs for ``precision``
    (:func:`network_precision`)."""
    return NETWORK_PRECISIONS[network_precision(precision, model_precision, device)][0]


def _onednn_linear():
    """oneDNN's fused linear op, or None where torch has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


class FusedMLP(nn.Module):
    """An :class:`~kinetics.networks.architectures.MLP`'s layers on oneDNN's fused linear op,
    each activation fused into the linear layer before it; the weights are the network's own
    tensors (no copy) until :meth:`prepack`. Scriptable (TorchScript).

    ``hidden_dtype`` (with three or more layers): the layers between the first and the last run
    in it (their weights are cast once; the activations are cast before the second layer and
    back before the last), the first and last in the network's own dtype."""

    def __init__(self, network: MLP, hidden_dtype: torch.dtype | None = None):
        super().__init__()
        layers = _fused_layers(list(network.net))
        self.weights = [layer.weight for layer, _ in layers]
        self.biases = [layer.bias for layer, _ in layers]
        self.activations = [fused for _, fused in layers]
        self.packed = False
        self.pack_rows = PACK_BATCH_ROWS
        self.io_dtype = self.weights[0].dtype
        self.hidden_dtype = hidden_dtype if hidden_dtype is not None else self.io_dtype
        self.mixed = self.hidden_dtype != self.io_dtype and len(self.weights) >= 3
        if self.mixed:
            for i in range(1, len(self.weights) - 1):
                self.weights[i] = self.weights[i].detach().to(self.hidden_dtype)
                self.biases[i] = self.biases[i].detach().to(self.hidden_dtype)

    @torch.jit.export
    def prepack(self) -> None:
        """Reorder the weights once into oneDNN's own layout (opaque tensors, which TorchScript
        cannot save: call it after loading), so that a call does not reorder them: the same
        kernels and bits, 10-30 % less time for a few rows."""
        if not self.packed:
            for i in range(len(self.weights)):
                self.weights[i] = torch.ops.mkldnn._reorder_linear_weight(self.weights[i],
                                                                           self.pack_rows)
            self.packed = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Outputs ``[n, n_out]`` for inputs ``h`` ``[n, n_in]`` (the weights' dtype)."""
        last = len(self.weights) - 1
        for i in range(len(self.weights)):
            if self.mixed and i == 1:
                h = h.to(self.hidden_dtype)
            elif self.mixed and i == last:
                h = h.to(self.io_dtype)
            h = torch.ops.mkldnn._linear_pointwise(h, self.weights[i], self.biases[i],
                                                   self.activations[i], [], "none")
        return h


def fusable(network: nn.Module) -> bool:
    """True when every layer of ``network`` is a linear layer or an activation oneDNN fuses into
    the linear layer before it (an :class:`~kinetics.networks.architectures.MLP` of GELU, SiLU or tanh)."""
    if not isinstance(network, MLP):
        return False
    return all(isinstance(layer, nn.Linear) for layer, _ in _fused_layers(list(network.net)))


class BlockedForward(nn.Module):
    """Evaluates ``network`` (in eval mode, on ``device`` in ``dtype``) block by block on CPU, in
    one call on a GPU (whose throughput wants large batches). Scriptable (TorchScript) when
    ``network`` is; the compiled step (:mod:`kinetics.step.compiled_step`) holds one per network."""

    def __init__(self, network: nn.Module, device: torch.device, dtype: torch.dtype,
                 hidden_dtype: torch.dtype | None = None):
        super().__init__()
        self.network = network
        self.block_rows = block_rows(network) if device.type == "cpu" else 0  # 0: one call
        onednn = (device.type == "cpu" and dtype in _ONEDNN_DTYPES and _onednn_linear() is not None
                  and fusable(network))
        if hidden_dtype is not None and hidden_dtype != dtype and not onednn:
            raise InputError("precision: bfloat16-hidden needs an MLP on oneDNN (a CPU with "
                             "oneDNN); use float32 or bfloat16")
        self.fused = FusedMLP(network, hidden_dtype) if onednn else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Network outputs ``[n, n_out]`` for inputs ``z`` ``[n, n_in]`` (the network's dtype)."""
        if self.block_rows == 0 or z.shape[0] == 0:
            return self.network(z)
        if z.shape[0] <= self.block_rows:
            return self._block(z)
        blocks = [self._block(z[start:start + self.block_rows])
                  for start in range(0, z.shape[0], self.block_rows)]
        return torch.cat(blocks)

    @torch.jit.export
    def prepack(self) -> None:
        """:meth:`FusedMLP.prepack` where the network runs on oneDNN (nothing elsewhere)."""
        fused = self.fused
        if fused is not None:
            fused.prepack()

    def _block(self, h: torch.Tensor) -> torch.Tensor:
        fused = self.fused
        if fused is None:
            return self.network(h)
        if h.shape[0] == 1:
            return fused.forward(torch.cat([h, h]))[:1]  # GEMM, not GEMV: a batch's rounding
        return fused.forward(h)


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


__all__ = ["BLOCK_ROWS_RANGE", "BLOCK_VALUES", "NETWORK_PRECISIONS", "BlockedForward", "FusedMLP",
           "block_rows", "fusable", "network_dtype", "network_precision", "precision_name"]
