"""Which cells of real flames a model serves: Cantera's flames on a uniform mesh, one model step.

A flow solver hands the surrogate the cells of its mesh; what matters is the share of those
cells (the frozen ones aside: they pass through unchanged) that the network advances rather
than Cantera. This module solves Cantera's freely propagating premixed flames and counterflow
diffusion flames, reads each on a uniform grid (``dx_m``, 20 µm by default, as a CFD mesh would
hold it), advances every cell by one model step and counts: frozen cells, cells served by a
network (and by which), cells handed to Cantera, over all non-frozen cells and over the flame
zone (heat-release rate ≥ 1 % of the peak).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cantera as ct
import numpy as np

from kinetics.integrator import Integrator
from mechanisms.composition import mixture_mass_fractions, parse_composition
from mechanisms.loading import solution_from_yaml
from mechanisms.state import ONE_ATM_PA, join_states

FLAME_ZONE = 0.01  # cells whose heat-release rate is at least this share of the peak


@dataclass
class FlameCoverage:
    """Counts of one flame's cells on the uniform grid (see the module docstring)."""

    kind: str  # "premixed" or "counterflow"
    label: str
    pressure_atm: float
    cells: int
    frozen: int
    fallback: int
    tail: int
    induction: int
    zone_cells: int  # non-frozen cells of the flame zone
    zone_fallback: int

    @property
    def served_fraction(self) -> float:
        """Share of the non-frozen cells a network served."""
        active = self.cells - self.frozen
        return (active - self.fallback) / active if active else 0.0

    @property
    def zone_served_fraction(self) -> float:
        return (self.zone_cells - self.zone_fallback) / self.zone_cells if self.zone_cells else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "served_fraction": self.served_fraction,
                "zone_served_fraction": self.zone_served_fraction}


def _on_grid(flame: ct.FlameBase, dx_m: float) -> tuple[np.ndarray, np.ndarray]:
    """``(states [n, 2+ns], heat-release rate [n] W/m³)`` of a solved flame on a uniform grid."""
    x = np.arange(flame.grid[0], flame.grid[-1], dx_m)
    temps = np.interp(x, flame.grid, flame.T)
    ys = np.array([np.interp(x, flame.grid, flame.Y[k]) for k in range(flame.Y.shape[0])]).T
    ys = np.clip(ys, 0.0, None)
    ys /= ys.sum(axis=1, keepdims=True)
    hrr = np.interp(x, flame.grid, np.abs(flame.heat_release_rate))
    return join_states(temps, np.full(len(x), flame.P), ys), hrr


def _count(integrator: Integrator, kind: str, label: str, pressure_atm: float,
           states: np.ndarray, hrr: np.ndarray) -> FlameCoverage:
    res = integrator.advance(states)
    frozen, fallback = res.frozen, res.fallback
    zone = (hrr >= FLAME_ZONE * hrr.max()) & ~frozen
    return FlameCoverage(kind, label, pressure_atm, len(states), int(frozen.sum()),
                         int(fallback.sum()), res.n_tail_steps, res.n_induction_steps,
                         int(zone.sum()), int((zone & fallback).sum()))


def premixed_coverage(integrator: Integrator, fuel: str, oxidizer: str, phi: float,
                      pressure_atm: float, temperature_k: float = 300.0, dx_m: float = 20e-6,
                      transport: str = "mixture-averaged") -> FlameCoverage:
    """Coverage of a freely propagating premixed flame (unburnt at ``temperature_k`` K)."""
    gas = solution_from_yaml(integrator.mechanism_yaml, integrator.meta.phase,
                             integrator.meta.mechanism_sha256)
    previous = gas.transport_model  # the Solution is shared (cached): give it back as it was
    if transport != previous:
        gas.transport_model = transport
    try:
        y0 = mixture_mass_fractions(gas, fuel, oxidizer, phi)
        gas.TPY = temperature_k, pressure_atm * ONE_ATM_PA, y0
        flame = ct.FreeFlame(gas, width=0.02)
        flame.set_refine_criteria(ratio=3.0, slope=0.06, curve=0.12)
        flame.solve(loglevel=0, auto=True)
        states, hrr = _on_grid(flame, dx_m)
    finally:
        if gas.transport_model != previous:
            gas.transport_model = previous
    return _count(integrator, "premixed", f"phi {phi:g}", pressure_atm, states, hrr)


def counterflow_coverage(integrator: Integrator, fuel: str, oxidizer: str, pressure_atm: float,
                         strain_rate_s: float, temperature_k: float = 300.0, width_m: float = 0.02,
                         dx_m: float = 20e-6) -> FlameCoverage:
    """Coverage of a counterflow diffusion flame, ``fuel`` stream against ``oxidizer`` (mole
    basis), inlets ``width_m`` apart with velocities for global strain ``strain_rate_s`` (1/s)."""
    gas = solution_from_yaml(integrator.mechanism_yaml, integrator.meta.phase,
                             integrator.meta.mechanism_sha256)
    p = pressure_atm * ONE_ATM_PA
    gas.TPX = temperature_k, p, parse_composition(oxidizer, gas.species_names, "oxidizer")
    y_ox, rho_o = gas.Y.copy(), gas.density
    gas.TPX = temperature_k, p, parse_composition(fuel, gas.species_names, "fuel")
    y_f, rho_f = gas.Y.copy(), gas.density
    u_o = strain_rate_s * width_m / 4.0
    flame = ct.CounterflowDiffusionFlame(gas, width=width_m)
    flame.P = p
    flame.fuel_inlet.Y, flame.fuel_inlet.T = y_f, temperature_k
    flame.fuel_inlet.mdot = rho_f * u_o * np.sqrt(rho_o / rho_f)
    flame.oxidizer_inlet.Y, flame.oxidizer_inlet.T = y_ox, temperature_k
    flame.oxidizer_inlet.mdot = rho_o * u_o
    flame.set_refine_criteria(ratio=3.0, slope=0.05, curve=0.1, prune=0.02)
    flame.solve(loglevel=0, auto=True)
    states, hrr = _on_grid(flame, dx_m)
    return _count(integrator, "counterflow", f"{fuel}, strain {strain_rate_s:g}/s", pressure_atm,
                  states, hrr)


# The flames `deepkin validate --flames` reads, by the fuel's main species: premixed flames at
# 1 and 5 atm over the fuel's flammable range; counterflow flames of the fuel, pure and diluted
# with N2, against the oxidiser at low and high strain (H2's: φ 0.5–3, three dilutions, strains
# 100 and 1000 1/s; methane's and any other fuel's: the φ 0.7–1.3 of a natural-gas burner, and
# strains 100 and 300 1/s, methane/air's extinction lying near 400 1/s at 1 atm).
FLAME_SETS: dict[str, dict] = {
    "H2": {"phi": (0.5, 1.0, 2.0, 3.0), "fuel_share": (1.0, 0.5, 0.3), "strain_s": (100.0, 1000.0)},
    "*": {"phi": (0.7, 1.0, 1.3), "fuel_share": (1.0, 0.5), "strain_s": (100.0, 300.0)},
}
FLAME_PRESSURES_ATM = (1.0, 5.0)


def diluted(fuel: str, share: float) -> str:
    """The fuel stream ``fuel`` (mole basis, ``"CH4:1"``) as ``share`` of the moles, N2 the
    rest: ``diluted("H2:1", 0.5) == "H2:0.5,N2:0.5"``."""
    if share >= 1.0:
        return fuel
    parts = _components(fuel)
    total = sum(x for _, x in parts)
    names = ",".join(f"{name}:{share * x / total:g}" for name, x in parts)
    return f"{names},N2:{1.0 - share:g}"


def _components(composition: str) -> list[tuple[str, float]]:
    """``"CH4:3,H2:1"`` → ``[("CH4", 3.0), ("H2", 1.0)]`` (no mechanism needed)."""
    parts = [item.split(":") for item in composition.split(",") if item.strip()]
    return [(name.strip(), float(x)) for name, x in parts]


def standard_flames(fuel: str) -> tuple[list[tuple[float, float]], list[tuple[str, float, float]]]:
    """``(premixed [(φ, P atm)], counterflow [(fuel stream, P atm, strain 1/s)])`` for ``fuel``
    (its largest component picks the :data:`FLAME_SETS` entry)."""
    parts = _components(fuel)
    main = max(parts, key=lambda part: part[1])[0] if parts else ""
    flames = FLAME_SETS.get(main, FLAME_SETS["*"])
    premixed = [(phi, p) for p in FLAME_PRESSURES_ATM for phi in flames["phi"]]
    counterflow = [(diluted(fuel, share), p, a) for p in FLAME_PRESSURES_ATM
                   for share in flames["fuel_share"] for a in flames["strain_s"]]
    return premixed, counterflow


def standard_coverage(integrator: Integrator, fuel: str, oxidizer: str) -> list[FlameCoverage]:
    """The coverage of :func:`standard_flames` of ``fuel``; a flame Cantera cannot solve is
    left out."""
    premixed, counterflow = standard_flames(fuel)
    out = []
    for phi, p in premixed:
        try:
            out.append(premixed_coverage(integrator, fuel, oxidizer, phi, p))
        except ct.CanteraError:
            continue
    for stream, p, a in counterflow:
        try:
            out.append(counterflow_coverage(integrator, stream, oxidizer, p, a))
        except ct.CanteraError:
            continue
    return out


def coverage_table(rows: list[FlameCoverage]) -> list[str]:
    """Markdown lines: one row per flame."""
    lines = ["| flame | P (atm) | cells | frozen | served (non-frozen) | served (flame zone) | "
             "near-equilibrium net | induction net | Cantera |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.cells == r.frozen:  # Cantera's solution is extinguished: nothing burns, nothing to serve
            served = "— (all cells frozen: extinguished) | —"
        else:
            served = f"{100 * r.served_fraction:.1f} % | {100 * r.zone_served_fraction:.1f} %"
        lines.append(f"| {r.kind}, {r.label} | {r.pressure_atm:g} | {r.cells} | {r.frozen} | "
                     f"{served} | {r.tail} | {r.induction} | {r.fallback} |")
    return lines


__all__ = ["FLAME_SETS", "FlameCoverage", "counterflow_coverage", "coverage_table", "diluted",
           "premixed_coverage", "standard_coverage", "standard_flames"]
