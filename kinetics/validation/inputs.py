"""What a validation refuses before it starts: a grid it cannot run or that tests nothing, and
an output folder it cannot write.

A condition (T0 in K, P in atm, φ) is refused with one :class:`InputError` line when T0, P or φ
is not a number > 0, when T0 lies outside the mechanism's thermo range, or when no cell of it
could ever be stepped by the network: P outside the model's pressure domain (P stays constant),
T0 above its temperature domain (an adiabatic mixture does not cool back into it) or T0 below its
frozen temperature (the cells pass through unchanged). T0 below the temperature domain is
allowed: Cantera steps the induction until the gas heats into it (the shipped model's 1000 K
cases); whether it ever does is counted during the rollout (``ValidationReport.outside_domain``).
"""

from __future__ import annotations

import os
from pathlib import Path

import cantera as ct

from kinetics.integrator import Integrator
from mechanisms.config_file import is_number
from mechanisms.errors import InputError
from mechanisms.state import ONE_ATM_PA


def check_grid(integrator: Integrator, gas: ct.Solution, temperatures_k: list[float],
               pressures_atm: list[float], phis: list[float]) -> None:
    """InputError naming the first value of the grid that cannot be validated (see above)."""
    for name, values in (("temperature_k", temperatures_k), ("pressure_atm", pressures_atm),
                         ("phi", phis)):
        if not values:
            raise InputError(f"{name}: needs at least one value")
        for v in values:
            if not (is_number(v) and v > 0):
                raise InputError(f"{name}: must be a number > 0, got {v!r}")
    meta = integrator.meta
    for t0 in temperatures_k:
        if not gas.min_temp <= t0 <= gas.max_temp:
            raise InputError(f"temperature_k: {t0:g} K lies outside the thermo range of "
                             f"{meta.mechanism_source} ({gas.min_temp:g}–{gas.max_temp:g} K)")
        if t0 > integrator.t_hi:
            raise InputError(f"temperature_k: {t0:g} K lies above the model's domain (up to "
                             f"{meta.temperature_k[1]:.0f} K): Cantera would step every cell")
        if t0 < meta.frozen_temperature_k:
            raise InputError(f"temperature_k: {t0:g} K lies below the model's frozen "
                             f"temperature ({meta.frozen_temperature_k:g} K): its cells would "
                             "pass through unchanged")
    for p_atm in pressures_atm:
        if not integrator.p_lo <= p_atm * ONE_ATM_PA <= integrator.p_hi:
            lo, hi = (p / ONE_ATM_PA for p in meta.pressure_pa)
            raise InputError(f"pressure_atm: {p_atm:g} atm lies outside the model's domain "
                             f"({lo:.3g}–{hi:.3g} atm): Cantera would step every cell")


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the report folder ``out_dir`` (and its parents) now, before the work; InputError
    when it exists as a file or cannot be created."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"out: {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"out: cannot create {out_dir} ({exc.strerror or exc})")
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"out: directory {out_dir} is not writable")
    return out_dir
