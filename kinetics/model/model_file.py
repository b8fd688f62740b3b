"""The model file: one ``safetensors`` file, no pickle (see ``docs/model-file.md``).

Tensors: the network's weights under ``net.*`` and the normalisation/domain tensors under
``norm.*``/``domain.*``; a model with a near-equilibrium network adds its weights and
normalisation under ``tail.net.*`` and ``tail.norm.*``. Metadata (strings): ``deepkin_model``
(JSON: format version, architecture, λ, dt, species, training domain, …), ``mechanism_yaml``,
``weights_sha256`` (a checksum of every tensor) and, from format 3 on, ``metadata_sha256`` (a
checksum of every other metadata entry, ``weights_sha256`` among them, so of the whole file): a
damaged or edited file is refused rather than silently wrong. Every load and every save also
runs the consistency checks of ``kinetics/model/checks.py``. The tensor names are spelled here
only (:data:`X_MEAN` … :data:`OCCUPANCY_TENSOR`, the head prefixes :data:`TAIL` and :data:`INDUCTION`):
every reader and writer of a model file goes through them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mechanisms.atomic_io import atomic_write
from mechanisms.errors import InputError
from mechanisms.loading import mechanism_sha256

# The format this code writes, and the newest it reads: 1, one network; 2, a near-equilibrium
# network may follow; 3, the metadata are checksummed too; 4, the training domain may be an
# occupancy grid over mixture fraction, dilution, T, P and progress (``domain`` and the tensor
# ``domain.occupancy``) and an induction network may follow (``induction``). Older files are read
# with the checks of their format (and their per-species domain box), plus the consistency checks.
# 6: the main network's bfloat16 copy may route cells before the main network runs (``router``).
FORMAT_VERSION = 6

# The tensors of a model file. A network's tensors sit under its head's prefix: "" for the main
# network, TAIL for the near-equilibrium one, INDUCTION for the induction one.
TAIL, INDUCTION = "tail.", "induction."
HEADS = {"tail": TAIL, "induction": INDUCTION}  # a regime network's metadata key → its prefix
WEIGHTS = "net."  # + a key of the network's state_dict
X_MEAN, X_STD = "norm.x_mean", "norm.x_std"  # feature scaling [2+ns]
Y_MEAN, Y_STD = "norm.y_mean", "norm.y_std"  # target scaling [ns]
FEATURE_NORMS, TARGET_NORMS = (X_MEAN, X_STD), (Y_MEAN, Y_STD)
BCT_MIN, BCT_MAX = "domain.bct_min", "domain.bct_max"  # the per-species Box-Cox box [ns]
DOMAIN_TENSORS = (BCT_MIN, BCT_MAX)
OCCUPANCY_TENSOR = "domain.occupancy"  # the occupancy grid (format >= 4), uint8 0/1


def scaling_tensors(x_mean: torch.Tensor, x_std: torch.Tensor, y_mean: torch.Tensor,
                    y_std: torch.Tensor, head: str = "") -> dict[str, torch.Tensor]:
    """The scaling tensors of the network of ``head`` (``""``, :data:`TAIL` or
    :data:`INDUCTION`) under their names: features ``[2+ns]``, targets ``[ns]``."""
    return {head + X_MEAN: x_mean, head + X_STD: x_std, head + Y_MEAN: y_mean, head + Y_STD: y_std}


def non_network_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor but the main network's weights: what :func:`save_model` takes as ``extra``
    when it is given the (possibly changed) main network again."""
    return {k: v for k, v in tensors.items() if not k.startswith(WEIGHTS)}


@dataclass
class ModelMeta:
    """Everything about a surrogate besides its tensors."""

    name: str
    architecture: dict[str, Any]
    box_cox_lambda: float
    dt_s: float
    species: list[str]
    mechanism_sha256: str
    mechanism_source: str
    phase: str
    temperature_k: list[float]  # training domain [min, max]
    pressure_pa: list[float]
    frozen_temperature_k: float
    inert_species: list[str]
    output_transform: dict[str, Any] | None = None  # e.g. {"type": "signed_power", "lambda": 0.5}
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # The near-equilibrium network (format >= 2): {"architecture", "output_transform", "route_below",
    # "training"}. Cells whose rates, as the main network predicts them, are all below
    # ``route_below`` × the main target scale take their rates from it.
    tail: dict[str, Any] | None = None
    format_version: int = 1
    # The training domain as covered (format >= 4; kinetics/model/domain.py): {"check", "coordinates",
    # "edges", "min_rows", "dilate", "fuel", "oxidizer", "stoichiometric_mixture_fraction", …}
    # with the tensor ``domain.occupancy``; null: the per-species Box-Cox box alone (formats 1-3).
    domain: dict[str, Any] | None = None
    # The induction network (format >= 4): {"architecture", "output_transform", "route_below",
    # "progress_below", "training"} and optionally "fallback_below". Cells whose rates, as the
    # main network predicts them, are all below ``route_below`` × the main target scale and whose
    # progress is below ``progress_below`` take their rates from it; those whose rates, in its
    # own scale, are all below ``fallback_below`` (its resolution floor) go to Cantera.
    induction: dict[str, Any] | None = None
    # The precision the model was validated in for fast inference (format >= 5): "float32", or
    # "bfloat16" or "bfloat16-hidden" (only the hidden layers in bfloat16), used on CPUs that
    # multiply bfloat16 natively (kinetics.step.forward.network_precision).
    inference_precision: str = "float32"
    # The router (format >= 6; kinetics/training/router.py): {"precision": "bfloat16",
    # "skip_main_below", "checked"}. Where the main network runs in float32 on a device that
    # multiplies bfloat16 natively, its bfloat16 copy runs first: a cell that is not fresh
    # (progress at or above the induction network's ``progress_below``, when there is one) whose
    # rates it predicts all below ``skip_main_below`` (<= tail.route_below) × the main target
    # scale takes the near-equilibrium network's rates, and the float32 main network runs on the
    # other cells only. No tensors: the copy is the main network's weights.
    router: dict[str, Any] | None = None

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def streams(self) -> tuple[str | None, str | None]:
        """``(fuel, oxidizer)`` the model was trained on: its domain's, else its dataset's."""
        domain = self.domain or {}
        return (domain.get("fuel") or self.training.get("fuel"),
                domain.get("oxidizer") or self.training.get("oxidizer"))


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _metadata_digest(metadata: dict[str, str]) -> str:
    """sha256 of every metadata entry but ``metadata_sha256`` itself (canonical JSON)."""
    entries = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def save_model(path: str | Path, network: torch.nn.Module, meta: ModelMeta,
               extra: dict[str, torch.Tensor], mechanism_yaml: str) -> None:
    """Write the model file (atomically: a temporary file renamed into place), in the newest
    format; InputError when the model fails the load-time checks (it could not be read back)."""
    tensors = {WEIGHTS + k: v for k, v in network.state_dict().items()}
    tensors.update(extra)
    resave_model(path, meta, tensors, mechanism_yaml)


def resave_model(path: str | Path, meta: ModelMeta, tensors: dict[str, torch.Tensor],
                 mechanism_yaml: str) -> None:
    """Write the tensors of a read model file (:func:`read_model_file`), unchanged, with
    ``meta`` (a setting changed without retraining: the router, the resolution floor), in the
    newest format, atomically; InputError when the result fails the load-time checks."""
    if mechanism_sha256(mechanism_yaml) != meta.mechanism_sha256:
        raise ValueError("mechanism_yaml does not match meta.mechanism_sha256")
    from kinetics.model.checks import check_model  # (which reads this module's tensor names)

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = dataclasses.replace(meta, format_version=FORMAT_VERSION)
    check_model(meta, tensors, mechanism_yaml, path)
    metadata = {"deepkin_model": json.dumps(asdict(meta)), "mechanism_yaml": mechanism_yaml,
                "weights_sha256": _weights_digest(tensors)}
    metadata["metadata_sha256"] = _metadata_digest(metadata)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file private; a model is shareable

    atomic_write(path, write)


def read_model_file(path: str | Path) -> tuple[ModelMeta, dict[str, torch.Tensor], str]:
    """``(meta, tensors, mechanism_yaml)`` of a model file, checked.

    Raises :class:`InputError` for a missing file, a file that is not a safetensors file, is
    truncated, corrupted or edited (checksums), is not a deepkin model, has a newer format, or
    fails a consistency check (``kinetics/model/checks.py``).
    """
    from kinetics.model.checks import check_model  # (which reads this module's tensor names)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model: {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise InputError(f"model: {path} is truncated or corrupted, not a readable safetensors "
                         f"file ({str(exc).splitlines()[0][:120]})")
    if "deepkin_model" not in metadata or "mechanism_yaml" not in metadata:
        raise InputError(f"model: {path} is a safetensors file but not a deepkin model")
    try:
        raw = json.loads(metadata["deepkin_model"])
        version = raw.get("format_version", 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise InputError(f"model: {path} has format {version}; this deepkin reads up to "
                             f"{FORMAT_VERSION}")
        if version not in range(1, FORMAT_VERSION + 1) or isinstance(version, bool):
            raise ValueError(f"format_version {version!r}")
        meta = ModelMeta(**raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"model: {path} has unreadable metadata ({exc})")
    # From format 3 on every file carries the metadata checksum; one that has it is checked.
    if (version >= 3 or "metadata_sha256" in metadata) and \
            metadata.get("metadata_sha256") != _metadata_digest(metadata):
        raise InputError(f"model: {path} is corrupted or was edited (the metadata do not match "
                         "their checksum)")
    if metadata.get("weights_sha256") != _weights_digest(tensors):
        raise InputError(f"model: {path} is corrupted (the weights do not match their checksum)")
    yaml_text = metadata["mechanism_yaml"]
    if mechanism_sha256(yaml_text) != meta.mechanism_sha256:
        raise InputError(f"model: {path} is corrupted (mechanism text does not match its sha256)")
    check_model(meta, tensors, yaml_text, path)
    return meta, tensors, yaml_text


def network_state(tensors: dict[str, torch.Tensor], prefix: str = WEIGHTS) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (:data:`WEIGHTS`, or a head's prefix + :data:`WEIGHTS`) with
    it removed (a ``state_dict``)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
