"""A checked reduction problem: the mechanism, targets, bounds, conditions and settings.

:class:`ReductionConfig` is what every reduction module works from; ``input_file.py`` builds it from
a pyMARS-style input file. Units are SI (K, Pa, s) throughout; bounds are percent, as in the file.

Four targets can judge a candidate: the ignition delay (``constant volume``/``constant pressure``
conditions), the laminar flame speed (``flame``), the PSR extinction residence time (``psr``) and
the equilibrium temperature of every condition's mixture, which is always a target.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.loading import Mechanism

IGNITION = "ignition-delay"
FLAME = "flame-speed"
PSR = "psr-extinction"
EQUILIBRIUM = "equilibrium-temperature"
TARGETS = (IGNITION, FLAME, PSR, EQUILIBRIUM)
"""Target names, cheapest first: the order candidates are judged in (see ``evaluate.py``)."""
TARGET_OF_KIND = {"constant volume": IGNITION, "constant pressure": IGNITION, "flame": FLAME,
                  "psr": PSR}
DEFAULT_EQUILIBRIUM_PERCENT = 1.0


@dataclass(frozen=True)
class Condition:
    """One initial state of a target simulation, resolved against the mechanism (SI units).

    ``mass_fractions`` holds the nonzero initial mass fractions by species name; ``kind`` is
    ``"constant volume"``, ``"constant pressure"`` (ignition), ``"flame"`` (a freely propagating
    flame; ``temperature_k`` is the unburnt gas) or ``"psr"`` (a perfectly stirred reactor;
    ``temperature_k`` is the inlet, ``residence_time_s`` where the search for extinction starts).
    ``target_weights`` ``[n_targets]`` weigh the target species in the graph methods (pyMARS's
    ``target-weights``), None for all 1.
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
    residence_time_s: float = 0.1
    target_weights: tuple[float, ...] | None = None

    @property
    def target(self) -> str:
        """The target this condition measures: :data:`IGNITION`, :data:`FLAME` or :data:`PSR`."""
        return TARGET_OF_KIND[self.kind]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.target_weights is not None:
            data["target_weights"] = list(self.target_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        data = dict(data)
        if data.get("target_weights") is not None:
            data["target_weights"] = tuple(data["target_weights"])
        return cls(**data)


@dataclass(frozen=True)
class SimulationSettings:
    """Integrator settings shared by the detailed and every reduced run.

    ``rtol``/``atol``: CVODES tolerances; ``max_steps``: per ignition run; ``cap_factor``: a reduced
    run stops (and scores as not igniting) at ``cap_factor`` × the detailed ignition delay;
    ``end_time_s``: longest detailed run (s) unless a condition sets ``end-time``;
    ``min_flame_speed_m_s``: a solved flame slower than this is no flame (pyMARS's
    ``min-flame-speed``).
    """

    rtol: float = 1e-6
    atol: float = 1e-15
    max_steps: int = 100_000
    ignition_criterion: str = "temperature-rise"
    cap_factor: float = 10.0
    end_time_s: float = 100.0
    min_flame_speed_m_s: float = 0.05

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


@dataclass(frozen=True)
class SensitivitySettings:
    """Sensitivity analysis after a graph method (pyMARS's DRGEP+SA; ``sensitivity.py``).

    ``upper_threshold``: species the graph method kept with an importance below this are tried one
    by one (pyMARS's ε*); ``kind``: ``"greedy"`` re-ranks the remaining ones after every removal,
    ``"initial"`` ranks them once.
    """

    upper_threshold: float = 0.2
    kind: str = "greedy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReductionConfig:
    """A parsed, checked reduction input file (see ``input_file.py``).

    ``bounds_percent`` maps each target present to its bound (max relative error over its
    conditions, percent); ``weights`` maps each to its weight in the objective that ranks candidates
    within the bounds (see ``evaluate.py``).
    """

    mechanism: Mechanism
    targets: list[str]
    retained: list[str]
    method: str | None
    error_percent: float
    ignition: list[Condition]
    flames: list[Condition] = field(default_factory=list)
    psrs: list[Condition] = field(default_factory=list)
    equilibrium_percent: float = DEFAULT_EQUILIBRIUM_PERCENT
    flame_percent: float | None = None
    psr_percent: float | None = None
    weights: dict[str, float] = field(default_factory=dict)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    deepmr: DeePMRSettings = field(default_factory=DeePMRSettings)
    sensitivity: SensitivitySettings | None = None
    source_path: str | None = None

    @property
    def conditions(self) -> list[Condition]:
        """Ignition conditions, then flames, then PSRs: the order of every per-condition array."""
        return [*self.ignition, *self.flames, *self.psrs]

    @property
    def bounds_percent(self) -> dict[str, float]:
        """Bound (percent) of every target present, in :data:`TARGETS` order."""
        bounds = {IGNITION: self.error_percent,
                  FLAME: self.error_percent if self.flame_percent is None else self.flame_percent,
                  PSR: self.error_percent if self.psr_percent is None else self.psr_percent,
                  EQUILIBRIUM: self.equilibrium_percent}
        present = {c.target for c in self.conditions} | {EQUILIBRIUM}
        return {t: bounds[t] for t in TARGETS if t in present}

    @property
    def run_name(self) -> str:
        """The outputs' prefix: the method, with ``-sa`` when a sensitivity analysis follows it."""
        assert self.method is not None
        return f"{self.method}-sa" if self.sensitivity is not None else self.method

    def weight(self, target: str) -> float:
        return self.weights.get(target, 1.0)

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
        # the graph methods' target weights change no detailed run: they stay out of the key
        conditions = [{k: v for k, v in c.to_dict().items() if k != "target_weights"}
                      for c in self.conditions]
        payload = {"mechanism": self.mechanism.sha256, "phase": self.mechanism.phase,
                   "conditions": conditions,
                   "simulation": self.simulation.to_dict(), "cantera": ct.__version__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
