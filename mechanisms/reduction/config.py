"""A checked reduction problem: the mechanism, targets, bound, conditions and settings.

:class:`ReductionConfig` is what every reduction module works from; ``input_file.py`` builds it from
a pyMARS-style input file. Units are SI (K, Pa, s) throughout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.loading import Mechanism


@dataclass(frozen=True)
class Condition:
    """One initial state of a target simulation, resolved against the mechanism (SI units).

    ``mass_fractions`` holds the nonzero initial mass fractions by species name; ``kind`` is
    ``"constant volume"``, ``"constant pressure"`` or ``"flame"`` (a freely propagating flame).
    """

    kind: str
    temperature_k: float
    pressure_pa: float
    mass_fractions: dict[str, float]
    label: str
    end_time_s: float | None = None
    max_steps: int | None = None
    phi: float | None = None
    width_m: float = 0.03

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        return cls(**data)


@dataclass(frozen=True)
class SimulationSettings:
    """Integrator settings shared by the detailed and every reduced run.

    ``rtol``/``atol``: CVODES tolerances; ``max_steps``: per ignition run; ``cap_factor``: a reduced
    run stops (and scores as not igniting) at ``cap_factor`` × the detailed ignition delay;
    ``end_time_s``: longest detailed run (s) unless a condition sets ``end-time``.
    """

    rtol: float = 1e-6
    atol: float = 1e-15
    max_steps: int = 100_000
    ignition_criterion: str = "temperature-rise"
    cap_factor: float = 10.0
    end_time_s: float = 100.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeePMRSettings:
    """Budget and hyper-parameters of the DeePMR loop (see ``mechanisms/reduction/deepmr.py``)."""

    seed: int = 0
    iterations: int = 40
    max_simulations: int = 4000
    initial_candidates: int = 200
    candidates_per_iteration: int = 120
    parent_fraction: float = 0.05
    max_deletions: int = 4
    children_per_parent: int = 400
    screen_bound_start: float = 4.0
    screen_bound_decay: float = 0.85
    patience: int = 4
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 300
    learning_rate: float = 3e-3
    start: str = "full"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data


@dataclass
class ReductionConfig:
    """A parsed, checked reduction input file (see ``input_file.py``)."""

    mechanism: Mechanism
    targets: list[str]
    retained: list[str]
    method: str | None
    error_percent: float
    ignition: list[Condition]
    flames: list[Condition] = field(default_factory=list)
    equilibrium_error_k: float | None = None
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    deepmr: DeePMRSettings = field(default_factory=DeePMRSettings)
    source_path: str | None = None

    @property
    def conditions(self) -> list[Condition]:
        """Ignition conditions first, then flames: the order of every per-condition array."""
        return [*self.ignition, *self.flames]

    def forced_species(self) -> list[str]:
        """Species every candidate keeps: targets, retained species and every initial species."""
        names = self.mechanism.species_names
        keep = set(self.targets) | set(self.retained)
        for cond in self.conditions:
            keep.update(cond.mass_fractions)
        return [n for n in names if n in keep]

    def forced_mask(self) -> np.ndarray:
        """:meth:`forced_species` as a boolean mask ``[ns]`` in the mechanism's species order."""
        keep = set(self.forced_species())
        return np.array([n in keep for n in self.mechanism.species_names])

    def conditions_key(self) -> str:
        """sha256 of the conditions and simulation settings (with the mechanism: the cache key)."""
        payload = {"mechanism": self.mechanism.sha256, "phase": self.mechanism.phase,
                   "conditions": [c.to_dict() for c in self.conditions],
                   "simulation": self.simulation.to_dict(), "cantera": ct.__version__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
