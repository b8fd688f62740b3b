"""Composition strings and fuel/oxidiser/equivalence-ratio mixtures."""

from __future__ import annotations

import math

import cantera as ct
import numpy as np

from mechanisms.errors import InputError, cantera_message, did_you_mean


def parse_composition(text: str, species_names: list[str] | tuple[str, ...],
                      field: str = "composition") -> dict[str, float]:
    """Parse ``"O2:1,N2:3.76"`` into ``{"O2": 1.0, "N2": 3.76}``.

    A bare species name (``"H2"``) means amount 1. Amounts are relative (mole or mass basis is the
    caller's choice) and need not sum to 1. Raises :class:`InputError` naming ``field`` for an empty
    string, an unknown species, a repeated species, or an amount that is not a finite number ≥ 0,
    and when every amount is 0.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{field}: empty composition; write it like 'O2:1,N2:3.76'")
    known = set(species_names)
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, amount_text = part.partition(":")
        name = name.strip()
        if name not in known:
            hint = did_you_mean(name, species_names, case_hint=True)
            raise InputError(f"{field}: unknown species '{name}'{hint}")
        if name in out:
            raise InputError(f"{field}: species '{name}' is given twice")
        try:
            amount = float(amount_text) if sep else 1.0
        except ValueError:
            raise InputError(f"{field}: amount of '{name}' is not a number: '{amount_text.strip()}'")
        if not math.isfinite(amount) or amount < 0:
            raise InputError(f"{field}: amount of '{name}' must be a finite number >= 0, got {amount}")
        out[name] = amount
    if not out or sum(out.values()) <= 0:
        raise InputError(f"{field}: all amounts are zero in '{text}'")
    return out


def mixture_mass_fractions(gas: ct.Solution, fuel: str, oxidizer: str, phi: float) -> np.ndarray:
    """Mass fractions ``[ns]`` of the fuel/oxidiser mixture at equivalence ratio ``phi``.

    ``fuel`` and ``oxidizer`` are mole-basis composition strings. Raises :class:`InputError` for
    ``phi`` ≤ 0 or not finite, for unknown species, and for a fuel or oxidiser that cannot be
    balanced (no oxygen in the oxidiser, say).
    """
    if not math.isfinite(phi) or phi <= 0:
        raise InputError(f"phi: equivalence ratio must be > 0, got {phi}")
    fuel_comp = parse_composition(fuel, gas.species_names, "fuel")
    ox_comp = parse_composition(oxidizer, gas.species_names, "oxidizer")
    try:
        gas.set_equivalence_ratio(phi, fuel_comp, ox_comp)
    except ct.CanteraError as exc:
        raise InputError(f"fuel/oxidizer: cannot form a mixture at phi={phi}: {cantera_message(exc)}")
    y = gas.Y.copy()
    if not np.all(np.isfinite(y)):
        raise InputError(f"fuel/oxidizer: cannot form a mixture at phi={phi} (check that the "
                         "oxidizer holds oxygen and the fuel something to burn)")
    return y

