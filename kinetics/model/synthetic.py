"""Model files with random weights, for speed measurements where accuracy does not matter.

``write_random_model(path, mechanism)`` writes a model file of the right shape for any mechanism
(network sizes as DeePCK's, or ``hidden``), so that the step and service benchmarks can size a
machine for a mechanism before any model is trained; the tests use small ones as cheap models.
Its steps cost what a trained model's cost and mean nothing (see docs/model-file.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from kinetics.model.model_file import BCT_MAX, BCT_MIN, ModelMeta, save_model, scaling_tensors
from kinetics.networks.architectures import build_model
from mechanisms.loading import load_mechanism
from mechanisms.state import state_width

# DeePCK's sizes (see docs/design): 1600-800-400 for ≤ 20 species, wider for GRI-sized mechanisms.
DEFAULT_HIDDEN_SMALL = [1600, 800, 400]
DEFAULT_HIDDEN_LARGE = [3200, 1600, 800, 400]


def write_random_model(path: str | Path, mechanism: str = "gri30.yaml", phase: str | None = None,
                       hidden: list[int] | None = None, dt_s: float = 1e-6, seed: int = 0,
                       temperature_k: tuple[float, float] = (300.0, 3500.0),
                       pressure_pa: tuple[float, float] = (1e3, 1e8),
                       frozen_temperature_k: float = 0.0) -> Path:
    """Write a model file of the right shape for ``mechanism`` with random weights; its path.

    ``hidden``: hidden layer sizes (default: 1600-800-400 up to 20 species, else
    3200-1600-800-400); ``dt_s`` (s), ``temperature_k`` (K) and ``pressure_pa`` (Pa): the model's
    step and training domain (cells outside it fall back to Cantera); ``frozen_temperature_k``
    (K): cells below it pass through unchanged. The default domain is wide (every cell is served
    by the network) and the normalisation is scaled so that predicted rates are small; the steps
    it takes are meaningless but cost what real ones do.
    """
    mech = load_mechanism(mechanism, phase)
    ns = mech.n_species
    width = state_width(ns)
    hidden = hidden or (DEFAULT_HIDDEN_SMALL if ns <= 20 else DEFAULT_HIDDEN_LARGE)
    arch = {"type": "mlp", "n_in": width, "n_out": ns, "hidden": list(hidden), "activation": "gelu"}
    torch.manual_seed(seed)
    net = build_model(arch)
    f64 = dict(dtype=torch.float64)
    extra = {
        **scaling_tensors(torch.zeros(width, **f64), torch.ones(width, **f64) * 10.0,
                          torch.zeros(ns, **f64), torch.ones(ns, **f64) * 1e-3),
        BCT_MIN: torch.full((ns,), -10.0, **f64), BCT_MAX: torch.zeros(ns, **f64),
    }
    meta = ModelMeta(
        name=f"random-{Path(mechanism).stem}", architecture=arch, box_cox_lambda=0.1, dt_s=dt_s,
        species=mech.species_names, mechanism_sha256=mech.sha256, mechanism_source=mech.source,
        phase=mech.phase, temperature_k=list(temperature_k), pressure_pa=list(pressure_pa),
        frozen_temperature_k=frozen_temperature_k, inert_species=mech.inert_species,
        description="random weights (benchmarks only)")
    save_model(path, net, meta, extra, mech.yaml_text)
    return Path(path)
