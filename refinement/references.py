"""The ODE references a round is judged against, computed once and cached in the work folder,
keyed by everything that determines them.

- A flame: the same OpenFOAM case run with OpenFOAM's own ODE chemistry (same mechanism, mesh
  and deltaT): ``references/openfoam/<case>-<key>/`` (the case and its ``result.json``).
- A 0D condition: Cantera's adaptive solution of the constant-pressure reactor up to the
  rollout's end time (tight tolerances) and its HP equilibrium:
  ``references/zero-d/<key>.json``.

The key is a sha256 of the parameters (the mechanism's sha256 among them), so a reference is
reused by every round and by every run that shares the work folder's ``references/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mechanisms.atomic_io import atomic_write_text
from refinement.config import FlameCase


def key_of(params: dict[str, Any]) -> str:
    """A short stable key (hex) of a parameter mapping."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flame_params(case: FlameCase, fuel: str, oxidizer: str, mechanism_sha256: str,
                 model_dt_s: float, band_k: float) -> dict[str, Any]:
    """What an ODE flame run depends on: the case (with its fuel and oxidiser resolved), the
    mechanism, deltaT (the model's dt × steps per call) and the heat-release band width (K)."""
    return {"kind": case.kind, "phi": case.phi, "pressure_atm": case.pressure_atm,
            "temperature_k": case.temperature_k, "fuel": fuel, "oxidizer": oxidizer,
            "end_time_s": case.end_time_s, "cells": case.cell_count, "cells_y": case.cells_y,
            "velocity_m_s": case.velocity_m_s, "steps_per_call": case.steps_per_call,
            "mechanism_sha256": mechanism_sha256, "model_dt_s": model_dt_s, "band_k": band_k}


def flame_reference(root: Path, case: FlameCase, model_path: Path, fuel: str, oxidizer: str,
                    mechanism_sha256: str, model_dt_s: float, band_k: float,
                    timeout_s: float) -> dict[str, Any]:
    """The case run with OpenFOAM's ODE chemistry (the run's ``asdict``), from the cache or
    run now (FoamError when OpenFOAM fails: a reference must exist)."""
    from refinement.cases import run_flame

    params = flame_params(case, fuel, oxidizer, mechanism_sha256, model_dt_s, band_k)
    folder = root / "openfoam" / f"{case.label}-{key_of(params)}"
    return run_flame(case, folder, model_path, "ode", None, None, band_k, timeout_s,
                     fuel=fuel, oxidizer=oxidizer, keep_failure=False)


def zero_d_reference(root: Path, gas, fuel: str, oxidizer: str, mechanism_sha256: str,
                     temperature_k: float, pressure_atm: float, phi: float,
                     end_time_s: float) -> dict[str, Any]:
    """Cantera's constant-pressure reactor from the fresh mixture (T0 K, P atm, φ) to
    ``end_time_s`` s: ``t_end_k`` (K, interpolated at the end time), ``idt_s`` (T0 + 400 K
    crossing, None without ignition) and ``equilibrium_t_k`` (HP equilibrium, K)."""
    from mechanisms.composition import mixture_mass_fractions
    from mechanisms.ignition import IGNITION_RISE_K, crossing_time
    from mechanisms.reactor import trajectory
    from mechanisms.state import ONE_ATM_PA, join_states, temperature

    params = {"mechanism_sha256": mechanism_sha256, "fuel": fuel, "oxidizer": oxidizer,
              "temperature_k": temperature_k, "pressure_atm": pressure_atm, "phi": phi,
              "end_time_s": round(end_time_s, 12)}
    path = root / "zero-d" / f"{key_of(params)}.json"
    if path.is_file():
        return json.loads(path.read_text())["reference"]
    started = time.perf_counter()
    y0 = mixture_mass_fractions(gas, fuel, oxidizer, phi)
    p_pa = pressure_atm * ONE_ATM_PA
    times, states = trajectory(gas, join_states([temperature_k], [p_pa], y0[None, :])[0],
                               end_time_s)
    temps = temperature(states)
    gas.TPY = temperature_k, p_pa, y0
    gas.equilibrate("HP")
    idt = crossing_time(times, temps, temperature_k + IGNITION_RISE_K)
    reference = {"t_end_k": float(np.interp(end_time_s, times, temps)),
                 "idt_s": None if idt is None else float(idt), "equilibrium_t_k": float(gas.T)}
    atomic_write_text(path, json.dumps({"params": params, "reference": reference,
                                        "seconds": time.perf_counter() - started}, indent=1))
    return reference
