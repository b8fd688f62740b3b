"""DNN chemistry integrators: from a dataset file to a model that advances cells by one step.

:func:`train` fits a network (:class:`TrainConfig`; an MLP or MscaleDNN from the registry of
``networks.architectures``, Box-Cox features, CPU, one GPU or torchrun/DDP; ``training/``) on a
dataset of ``deepkin sample`` and writes one safetensors model file (``model/model_file``:
weights, normalisation, training domain and the embedded mechanism, checksummed).
:class:`Integrator` loads such a file (:func:`resolve_model` also takes a shipped name such as
``"h2-air"``; :func:`list_models` lists a folder) and advances ``[n, 2+ns]`` states ``[T (K),
P (Pa), Y...]``: ``step(states, dt)``, or ``advance(states, n_substeps)`` for the counts of
frozen, fallback and near-equilibrium cells; its arithmetic is one TorchScript module
(:class:`CompiledStep`, ``step/``), which :func:`export_model` writes for C and C++ callers
(``deepkin export``); ``outputs`` evaluates the optional outputs at its states.
:func:`validate` judges a model a-posteriori against Cantera (0D autoignition; ``validation/``)
and writes its report. :func:`write_random_model` writes a random-weight model of the right shape
for sizing a machine. Names are imported on first use.
"""

from __future__ import annotations

from mechanisms.lazy_exports import lazy_exports

_HOMES = {
    "CompiledStep": "kinetics.step.compiled_step", "export_model": "kinetics.step.compiled_step",
    "Integrator": "kinetics.integrator", "StepResult": "kinetics.integrator",
    "resolve_device": "kinetics.step.device",
    "ModelMeta": "kinetics.model.model_file", "read_model_file": "kinetics.model.model_file",
    "save_model": "kinetics.model.model_file",
    "build_model": "kinetics.networks.architectures", "register": "kinetics.networks.architectures",
    "DEFAULT_MODEL": "kinetics.model.registry", "list_models": "kinetics.model.registry",
    "resolve_model": "kinetics.model.registry",
    "write_random_model": "kinetics.model.synthetic",
    "TrainConfig": "kinetics.training.train", "TrainResult": "kinetics.training.train",
    "train": "kinetics.training.train",
    "ValidationReport": "kinetics.validation.validate", "validate": "kinetics.validation.validate",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
