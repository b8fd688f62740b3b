"""Small random-weight model files for the service tests."""

from __future__ import annotations

from pathlib import Path

from kinetics.synthetic import write_random_model


def write_test_model(path: str | Path, mechanism: str = "h2o2.yaml", hidden: list[int] | None = None,
                     frozen_temperature_k: float = 0.0,
                     temperature_k: tuple[float, float] = (300.0, 3500.0), seed: int = 0) -> Path:
    """A model file with random weights (see ``kinetics.synthetic``), two hidden layers of 32 by
    default, and the given frozen temperature (K) and training temperature range (K; cells
    outside it fall back to Cantera)."""
    return write_random_model(path, mechanism=mechanism, hidden=hidden or [32, 32], seed=seed,
                              temperature_k=temperature_k, frozen_temperature_k=frozen_temperature_k)
