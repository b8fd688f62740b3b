"""Small random-weight model files for the service tests."""

from __future__ import annotations

from pathlib import Path

from kinetics.model.synthetic import write_random_model


def write_test_model(path: str | Path, mechanism: str = "h2o2.yaml", hidden: list[int] | None = None,
                     frozen_temperature_k: float = 0.0,
                     temperature_k: tuple[float, float] = (300.0, 3500.0), seed: int = 0) -> Path:
    """A model file with random weights (see ``kinetics.model.synthetic``), two hidden layers of 32 by
    default, and the given frozen temperature (K) and training temperature range (K; cells
    outside it fall back to Cantera)."""
    return write_random_model(path, mechanism=mechanism, hidden=hidden or [32, 32], seed=seed,
                              temperature_k=temperature_k, frozen_temperature_k=frozen_temperature_k)


def rewrite_model_file(src: str | Path, dst: str | Path, meta_edit=None, tensor_edit=None,
                       checksums: str = "remake") -> Path:
    """A copy of the model file ``src`` at ``dst`` with its ``deepkin_model`` JSON (``meta_edit``
    takes the parsed dict) and/or its tensors (``tensor_edit`` takes the name → tensor dict)
    edited in place.

    ``checksums``: ``"remake"`` computes both checksums again (only the load-time consistency
    checks can refuse the copy); ``"format-2"`` writes it as a format-2 file (no metadata
    checksum, the weights checksum made again); ``"keep"`` leaves both as they were (an edit by
    hand, which the checksums must catch).
    """
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from kinetics.model.model_file import _metadata_digest, _weights_digest

    if checksums not in ("remake", "format-2", "keep"):
        raise ValueError(f"checksums: {checksums!r}")
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    raw = json.loads(metadata["deepkin_model"])
    if meta_edit:
        meta_edit(raw)
    if tensor_edit:
        tensor_edit(tensors)
    if checksums == "format-2":
        raw["format_version"] = 2
        metadata.pop("metadata_sha256")
    metadata["deepkin_model"] = json.dumps(raw)
    if checksums != "keep":
        metadata["weights_sha256"] = _weights_digest(tensors)
    if checksums == "remake":
        metadata["metadata_sha256"] = _metadata_digest(metadata)
    save_file(tensors, str(dst), metadata=metadata)
    return Path(dst)
