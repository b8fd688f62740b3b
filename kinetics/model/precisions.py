"""The names of the precisions a model's networks run in, without torch (the command line and the
service's settings read them at start-up): ``float32``, ``bfloat16``, and ``bfloat16-hidden``
(the hidden-to-hidden layers in bfloat16, the first and last in float32). A model file records
the one it was validated in (``inference_precision``); the dtypes of each are
:data:`kinetics.step.forward.NETWORK_PRECISIONS`."""

from __future__ import annotations

INFERENCE_PRECISIONS = ("float32", "bfloat16", "bfloat16-hidden")

__all__ = ["INFERENCE_PRECISIONS"]
