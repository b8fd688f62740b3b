"""Settings a trained model's file carries that change what the step does without retraining.

The induction network's resolution floor (``induction.fallback_below``, format ≥ 5): an
induction cell whose rates, in that network's own scale (``induction.norm.y_std``), are all
below it goes to the fallback (Cantera), unless it has nothing to burn. The trainer records the
value of the induction network's config; :func:`set_fallback_below` writes a copy of a model
with another value, for a user whose validation shows slow induction the network does not
resolve (docs/training.md, "The resolution floor, set after training"). The networks, their
scales and every other setting are unchanged: only the share of cells handed over moves.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from kinetics.model.model_file import ModelMeta, read_model_file, resave_model
from mechanisms.errors import InputError


def set_fallback_below(model: str | Path, out: str | Path, value: float) -> ModelMeta:
    """Write the model file ``model`` (a path or shipped name) to ``out`` with
    ``induction.fallback_below`` = ``value`` (≥ 0, a fraction of the induction network's own
    target scale; 0: no floor) and return the new metadata. InputError for a model without an
    induction network, or a value that is not a finite number ≥ 0."""
    from kinetics.model.registry import resolve_model

    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise InputError(f"fallback-below: must be a finite number >= 0, got {value!r}")
    path = resolve_model(model)
    meta, tensors, yaml_text = read_model_file(path)
    if not meta.induction:
        raise InputError(f"model: {path} has no induction network: a resolution floor needs one "
                         "(it applies to the cells that network serves)")
    meta = dataclasses.replace(meta, induction={**meta.induction, "fallback_below": float(value)})
    resave_model(out, meta, tensors, yaml_text)
    return meta
