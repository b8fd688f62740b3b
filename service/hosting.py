"""Hosted models: what the service says about each model and what it checks before a step.

A :class:`ModelHost` wraps one :class:`~kinetics.integrator.Integrator`: its facts for the API,
the client's mechanism and species checks (409), the dt → substep conversion and the optional
outputs (evaluated by Cantera in :mod:`kinetics.outputs`). ``load_hosts`` loads every model file
of a directory. The step itself runs in :mod:`service.batcher`.

States are ``[n, 2+ns]`` arrays ``[T (K), P (Pa), Y_1..Y_ns]`` (float64 or float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kinetics.integrator import Integrator
from kinetics.model.registry import SHIPPED_DIR, list_models
from kinetics.outputs import OUTPUTS, evaluate_outputs
from mechanisms.errors import InputError
from service.errors import MechanismMismatch


def parse_outputs(names: list[str] | str | None) -> tuple[str, ...]:
    """The requested optional outputs in canonical order; InputError names an unknown one."""
    if not names:
        return ()
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    wanted = {n.strip() for n in names}
    unknown = sorted(wanted - set(OUTPUTS))
    if unknown:
        raise InputError(f"outputs: unknown output '{unknown[0]}' (known: {', '.join(OUTPUTS)})")
    return tuple(n for n in OUTPUTS if n in wanted)


class ModelHost:
    """One served model: the integrator plus what the API says about it."""

    def __init__(self, name: str, integrator: Integrator):
        self.name = name
        self.integrator = integrator
        self.meta = integrator.meta

    @classmethod
    def load(cls, name: str, path: str | Path, device: str = "auto",
             precision: str = "auto") -> ModelHost:
        return cls(name, Integrator.load(path, device=device, dtype=precision))

    # -- facts -------------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        return self.integrator.species

    @property
    def width(self) -> int:
        return self.integrator.width

    def info(self) -> dict:
        """What a client needs to build states: species order, dt, domain, mechanism hash."""
        m = self.meta
        return {
            "name": self.name, "description": m.description, "species": list(m.species),
            "n_species": m.n_species, "width": self.width, "dt_s": m.dt_s,
            "mechanism_sha256": m.mechanism_sha256, "mechanism_source": m.mechanism_source,
            "phase": m.phase, "temperature_k": list(m.temperature_k), "pressure_pa": list(m.pressure_pa),
            "frozen_temperature_k": m.frozen_temperature_k, "inert_species": list(m.inert_species),
            "outputs": list(OUTPUTS), "device": str(self.integrator.device),
            "precision": self.integrator.precision,
            "near_equilibrium_route_below": m.tail["route_below"] if m.tail else None,
        }

    def check_client(self, mechanism_sha256: str | None = None, species: list[str] | None = None) -> None:
        """409 when the client's mechanism hash or species order is not the model's."""
        if mechanism_sha256 and mechanism_sha256.strip().lower() != self.meta.mechanism_sha256:
            raise MechanismMismatch(
                f"mechanism_sha256: the client's {mechanism_sha256.strip()[:16]}… is not model "
                f"'{self.name}''s {self.meta.mechanism_sha256[:16]}… ({self.meta.mechanism_source})")
        if species is not None and list(species) != self.species:
            first = next((i for i, (a, b) in enumerate(zip(species, self.species)) if a != b),
                         min(len(species), len(self.species)))
            raise MechanismMismatch(
                f"species: the client's order differs from model '{self.name}''s at position {first} "
                f"({len(species)} species sent, {len(self.species)} expected)")

    def substeps(self, dt_s: float | None) -> int:
        """Model steps in ``dt_s`` (default: one); InputError unless it is a whole multiple of
        the model's dt (:meth:`Integrator.substeps <kinetics.integrator.Integrator.substeps>`)."""
        return self.integrator.substeps(dt_s)

    # -- work (device thread only) -----------------------------------------------------------------
    def outputs(self, states: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Cantera-evaluated outputs (float64) at ``states`` ``[n, 2+ns]`` (float64 or float32,
        read exactly as given): :func:`kinetics.outputs.evaluate_outputs`."""
        return evaluate_outputs(self.integrator.gas, states, names)


def load_hosts(model_dir: str | Path | None, device: str = "auto",
               precision: str = "auto") -> dict[str, ModelHost]:
    """One :class:`ModelHost` per ``*.safetensors`` file of ``model_dir`` (default: shipped)."""
    entries = list_models(model_dir)
    if not entries:
        where = model_dir or SHIPPED_DIR
        hint = "" if model_dir else " (the shipped default model is missing; pass --model-dir DIR)"
        raise InputError(f"model-dir: no *.safetensors model files in {where}{hint}")
    return {e.name: ModelHost.load(e.name, e.path, device, precision) for e in entries}
