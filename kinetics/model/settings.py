"""Settings a trained model's file carries that change what the step does without retraining.

- The induction network's resolution floor (``induction.fallback_below``, format ≥ 5): an
  induction cell whose rates, in that network's own scale (``induction.norm.y_std``), are all
  below it goes to the fallback (Cantera), unless it has nothing to burn. The trainer records
  the value of the induction network's config; a user whose validation shows slow induction the
  network does not resolve writes a copy with another value (docs/training.md, "The resolution
  floor, set after training"). Only the share of cells handed over moves.
- The precision the model is validated in (``inference_precision``, format ≥ 5: ``float32``,
  ``bfloat16`` or ``bfloat16-hidden``): what ``auto`` runs the networks in where the CPU
  multiplies bfloat16 natively (:func:`kinetics.step.forward.network_precision`; float32
  elsewhere and on GPUs). Set it only once the model's flames and 0D validation have been run
  in that precision (docs/training.md, "bfloat16 in the hidden layers").

:func:`change_settings` writes a copy of a model with either changed; the networks, their
scales and every other setting are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from kinetics.model.model_file import ModelMeta, read_model_file, resave_model
from kinetics.model.precisions import INFERENCE_PRECISIONS
from mechanisms.errors import InputError


def change_settings(model: str | Path, out: str | Path, fallback_below: float | None = None,
                    inference_precision: str | None = None) -> ModelMeta:
    """Write the model file ``model`` (a path or shipped name) to ``out`` with the settings given
    (None: unchanged) and return the new metadata.

    ``fallback_below``: ``induction.fallback_below`` (a finite number ≥ 0, a fraction of the
    induction network's own target scale; 0: no floor). ``inference_precision``: one of
    :data:`~kinetics.model.precisions.INFERENCE_PRECISIONS`. InputError, naming the option, for a
    value out of range, for a floor on a model without an induction network, or when no setting
    is given.
    """
    from kinetics.model.registry import resolve_model

    if fallback_below is None and inference_precision is None:
        raise InputError("settings: give at least one of --fallback-below, --inference-precision")
    if fallback_below is not None and not (
            isinstance(fallback_below, (int, float)) and math.isfinite(fallback_below)
            and fallback_below >= 0):
        raise InputError(f"fallback-below: must be a finite number >= 0, got {fallback_below!r}")
    if inference_precision is not None and inference_precision not in INFERENCE_PRECISIONS:
        raise InputError(f"inference-precision: must be {', '.join(INFERENCE_PRECISIONS)}, got "
                         f"{inference_precision!r}")
    path = resolve_model(model)
    meta, tensors, yaml_text = read_model_file(path)
    if fallback_below is not None:
        if not meta.induction:
            raise InputError(f"model: {path} has no induction network: a resolution floor needs "
                             "one (it applies to the cells that network serves)")
        meta = dataclasses.replace(meta, induction={**meta.induction,
                                                    "fallback_below": float(fallback_below)})
    if inference_precision is not None:
        meta = dataclasses.replace(meta, inference_precision=inference_precision)
    resave_model(out, meta, tensors, yaml_text)
    return meta
