"""State mixes for speed measurements: the cells of a uniform mesh through real flames, and 0D.

A CFD user's chemistry step sees the cells of a mesh: cold fresh gas, a thin flame, a burnt
region. Each mix here is such a set of cells ``[m, 2+ns]`` (T in K, P in Pa, Y): a Cantera flame
(``sampling.manifold``) interpolated linearly onto a uniform grid of spacing ``spacing_m`` over
the whole domain Cantera solved on (its cold inlet stretches included), or, for ``autoignition``,
the states of a 0D ignition at the solver's own steps (dense where the chemistry is fast).

    mix = build_mix("premixed-phi1", gas, "H2:1")        # a Cantera FreeFlame, 20 µm cells
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cantera as ct
import numpy as np

from mechanisms.state import ONE_ATM_PA, normalise_mass_fractions
from sampling.manifold import autoignition_profile, counterflow_profile, free_flame_profile

AIR = "O2:1,N2:3.76"
SPACING_M = 20e-6  # a fine CFD mesh for an atmospheric H2/air flame (thermal thickness ~0.4 mm)
AUTOIGNITION_CELLS = 4096


@dataclass(frozen=True)
class StateMix:
    """The cells of one case: ``states`` ``[m, 2+ns]`` and what they are, in words."""

    name: str
    states: np.ndarray
    description: str


def on_uniform_grid(coordinate: np.ndarray, states: np.ndarray, spacing_m: float) -> np.ndarray:
    """``states`` ``[k, 2+ns]`` given at increasing ``coordinate`` ``[k]`` (m), interpolated
    linearly at the centres of cells of width ``spacing_m`` (m) covering the same span; ΣY = 1."""
    n = max(1, int((coordinate[-1] - coordinate[0]) / spacing_m))
    x = coordinate[0] + (np.arange(n) + 0.5) * spacing_m
    cells = np.stack([np.interp(x, coordinate, column) for column in states.T], axis=1)
    return normalise_mass_fractions(cells)


def premixed(gas: ct.Solution, fuel: str, phi: float, pressure_atm: float = 1.0,
             spacing_m: float = SPACING_M) -> np.ndarray:
    """A freely propagating flame of fuel/air at ``phi``, 300 K, on a uniform grid."""
    gas.set_equivalence_ratio(phi, fuel, AIR)
    z, states, _ = free_flame_profile(gas, 300.0, pressure_atm * ONE_ATM_PA, gas.Y.copy())
    return on_uniform_grid(z, states, spacing_m)


def counterflow(gas: ct.Solution, fuel: str, fuel_n2_mole_fraction: float = 0.5,
                strain_rate_s: float = 100.0, pressure_atm: float = 1.0,
                spacing_m: float = SPACING_M) -> np.ndarray:
    """A counterflow diffusion flame of fuel diluted with N2 (by mole) against air, 300 K both
    sides, 2 cm between the nozzles, at global strain rate ``strain_rate_s`` (1/s)."""
    gas.TPX = 300.0, ONE_ATM_PA, fuel
    fuel_x = gas.X * (1.0 - fuel_n2_mole_fraction)
    fuel_x[gas.species_index("N2")] += fuel_n2_mole_fraction
    gas.TPX = 300.0, ONE_ATM_PA, fuel_x
    fuel_y = gas.Y.copy()
    gas.TPX = 300.0, ONE_ATM_PA, AIR
    z, states, _ = counterflow_profile(gas, fuel_y, gas.Y.copy(), pressure_atm * ONE_ATM_PA,
                                       strain_rate_s)
    return on_uniform_grid(z, states, spacing_m)


def autoignition(gas: ct.Solution, fuel: str, spacing_m: float = SPACING_M,
                 n: int = AUTOIGNITION_CELLS) -> np.ndarray:
    """``n`` states drawn (seeded) from the solver steps of a stoichiometric fuel/air
    ignition at 1400 K and 10 atm (dense through ignition, then recombination); ``spacing_m``
    is there for the common signature of :data:`MIXES` (a 0D case has no mesh)."""
    gas.set_equivalence_ratio(1.0, fuel, AIR)
    _, states, _ = autoignition_profile(gas, 1400.0, 10 * ONE_ATM_PA, gas.Y.copy(), t_max_s=0.05)
    return states[np.random.default_rng(0).integers(0, len(states), n)]


MIXES: dict[str, tuple[str, Callable[[ct.Solution, str, float], np.ndarray]]] = {
    "premixed-phi1": ("premixed flame, phi 1, 1 atm",
                      lambda g, f, dx: premixed(g, f, 1.0, spacing_m=dx)),
    "premixed-phi0.5": ("premixed flame, phi 0.5, 1 atm",
                        lambda g, f, dx: premixed(g, f, 0.5, spacing_m=dx)),
    "premixed-phi2.5": ("premixed flame, phi 2.5, 1 atm",
                        lambda g, f, dx: premixed(g, f, 2.5, spacing_m=dx)),
    # methane's lean and rich flames (its flammable range ends near phi 0.5 and 1.6)
    "premixed-phi0.7": ("premixed flame, phi 0.7, 1 atm",
                        lambda g, f, dx: premixed(g, f, 0.7, spacing_m=dx)),
    "premixed-phi1.3": ("premixed flame, phi 1.3, 1 atm",
                        lambda g, f, dx: premixed(g, f, 1.3, spacing_m=dx)),
    "premixed-phi1-5atm": ("premixed flame, phi 1, 5 atm",
                           lambda g, f, dx: premixed(g, f, 1.0, 5.0, spacing_m=dx)),
    "counterflow": ("counterflow, fuel:N2 1:1 vs air, 100/s, 1 atm",
                    lambda g, f, dx: counterflow(g, f, spacing_m=dx)),
    "autoignition": ("0D ignition, phi 1, 1400 K, 10 atm, solver steps", autoignition),
}
"""Each mix: ``(description, builder(gas, fuel, spacing_m) → cells [m, 2+ns])``."""


def build_mix(name: str, gas: ct.Solution, fuel: str, spacing_m: float = SPACING_M) -> StateMix:
    """The mix ``name`` (a key of :data:`MIXES`) for ``gas`` (needs transport data for the flames)
    and ``fuel`` (a mole-basis composition string such as ``"H2:1"``), flames on cells of
    ``spacing_m`` (m)."""
    description, builder = MIXES[name]
    return StateMix(name, builder(gas, fuel, spacing_m), description)


__all__ = ["MIXES", "StateMix", "autoignition", "build_mix", "counterflow", "on_uniform_grid",
           "premixed"]
