"""The training domain as what was covered: an occupancy grid over mixture fraction, dilution,
temperature, pressure and progress (model file format 4).

A per-species box taken from the training rows says little once flames are in the data: a
counterflow flame spans N2 from 0 to 0.97 and every radical over tens of decades, so the box
holds nearly any state. What the network was trained on is a thin set in a few coordinates that
every cell has:

- ``mixture_fraction``: Bilger's, from the element mass fractions Z_e (kg/kg) and the recipe's
  fuel and oxidiser streams, ``Z = (β − β_ox)/(β_fuel − β_ox)`` with the coupling function
  ``β = Σ_e w_e Z_e / W_e`` (W_e in kg/mol; w = 2 for C, 1/2 for H, −1 for O: the O atoms each
  atom needs or brings, 0 for N, Ar, He). Binned as ``s = Z/(Z + Z_st)`` (s = 1/2 at
  stoichiometry) so that lean, stoichiometric and rich mixtures get bins alike;
- ``diluent``: the mass fraction of the elements that take no part in the coupling function
  (N, Ar, He): 0.77 in air, 0 in pure H2, 0.97 in H2 diluted 30/70 by mole with N2;
- ``temperature_k`` (K) and ``log_pressure`` (ln(P / 1 atm));
- ``progress``: ``c = Σ Y_products / Σ Y_products,complete`` (products H2O and CO2, "complete"
  the composition with every H atom in H2O and the O left in CO2, as far as the O atoms go): 0
  in a fresh mixture, near 1 in burnt gas.

Training counts its rows in the grid's bins; bins holding at least ``min_rows`` rows, widened by
``dilate`` bins along every axis, are the domain, stored as ``domain.occupancy`` (uint8, one per
bin). :class:`DomainCoordinates` computes the coordinates of cells in torch (float64) for the
trainer and the :class:`~kinetics.integrator.Integrator` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cantera as ct
import numpy as np
import torch

from kinetics.networks.transforms import log_pressure
from mechanisms.composition import parse_composition
from mechanisms.config_file import check_keys, is_number
from mechanisms.errors import InputError
from mechanisms.state import ONE_ATM_PA, element_mass_matrix

COORDINATES = ("mixture_fraction", "diluent", "temperature_k", "log_pressure", "progress")
# O atoms an atom needs (> 0) or brings (< 0) when burnt to CO2 and H2O (Bilger's coupling function).
COUPLING = {"C": 2.0, "H": 0.5, "O": -1.0}
PRODUCTS = ("H2O", "CO2")


@dataclass
class DomainSettings:
    """How the grid is cut (``domain:`` of the training config).

    ``mixture_bins`` equal bins of ``s = Z/(Z + Z_st)`` over [0, 1]; ``diluent_bins`` of the
    diluent mass fraction over [0, 1]; temperature bins ``temperature_step_k`` (K) wide from
    ``temperature_range_k``; pressure bins a factor ``pressure_factor`` wide over
    ``pressure_range_atm``; ``progress_bins`` over [0, 1]; a bin is covered when it holds at
    least ``min_rows`` training rows, and the domain is the covered bins widened by ``dilate``
    bins along every axis. ``check``: ``occupancy`` (this grid and the per-species box),
    ``box`` (the per-species box only, as formats 1-3) or ``none`` (every cell within the
    temperature and pressure ranges goes to the network: for experiments that judge a network
    where it was not trained).
    """

    check: str = "occupancy"
    mixture_bins: int = 20
    diluent_bins: int = 20
    temperature_range_k: tuple[float, float] = (200.0, 3600.0)
    temperature_step_k: float = 50.0
    pressure_range_atm: tuple[float, float] = (0.5, 60.0)
    pressure_factor: float = 1.5
    progress_bins: int = 10
    min_rows: int = 2
    dilate: int = 1

    CHECKS = ("occupancy", "box", "none")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DomainSettings:
        """Settings from the ``domain:`` mapping; InputError naming a bad key or value."""
        data = dict(data or {})
        check_keys(data, [k for k in cls.__dataclass_fields__], "domain.", list_known=True)
        for key in ("temperature_range_k", "pressure_range_atm"):
            if key in data:
                value = data[key]
                if not (isinstance(value, (list, tuple)) and len(value) == 2
                        and all(is_number(v) for v in value) and 0 < value[0] < value[1]):
                    raise InputError(f"domain.{key}: must be [lo, hi] with 0 < lo < hi, got "
                                     f"{value!r}")
                data[key] = (float(value[0]), float(value[1]))
        out = cls(**data)
        out.check_values()
        return out

    def check_values(self) -> None:
        if self.check not in self.CHECKS:
            raise InputError(f"domain.check: must be one of {', '.join(self.CHECKS)}, got "
                             f"{self.check!r}")
        for key in ("mixture_bins", "diluent_bins", "progress_bins", "min_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"domain.{key}: must be a whole number >= 1, got {value!r}")
        if isinstance(self.dilate, bool) or not isinstance(self.dilate, int) or self.dilate < 0:
            raise InputError(f"domain.dilate: must be a whole number >= 0, got {self.dilate!r}")
        if not (is_number(self.temperature_step_k) and self.temperature_step_k > 0):
            raise InputError(f"domain.temperature_step_k: must be a number > 0 (K), got "
                             f"{self.temperature_step_k!r}")
        if not (is_number(self.pressure_factor) and self.pressure_factor > 1):
            raise InputError(f"domain.pressure_factor: must be a number > 1, got "
                             f"{self.pressure_factor!r}")

    def edges(self) -> list[list[float]]:
        """Bin edges of each coordinate (in :data:`COORDINATES` order), increasing."""
        t_lo, t_hi = self.temperature_range_k
        n_t = max(1, math.ceil((t_hi - t_lo) / self.temperature_step_k - 1e-9))
        p_lo, p_hi = (math.log(p) for p in self.pressure_range_atm)
        n_p = max(1, math.ceil((p_hi - p_lo) / math.log(self.pressure_factor) - 1e-9))
        return [np.linspace(0.0, 1.0, self.mixture_bins + 1).tolist(),
                np.linspace(0.0, 1.0, self.diluent_bins + 1).tolist(),
                np.linspace(t_lo, t_lo + n_t * self.temperature_step_k, n_t + 1).tolist(),
                np.linspace(p_lo, p_lo + n_p * math.log(self.pressure_factor), n_p + 1).tolist(),
                np.linspace(0.0, 1.0, self.progress_bins + 1).tolist()]


def stream_element_fractions(gas: ct.Solution, composition: str, field: str) -> np.ndarray:
    """Element mass fractions ``[ne]`` (kg/kg) of a mole-basis composition string."""
    x = parse_composition(composition, gas.species_names, field)
    gas.TPX = 300.0, ONE_ATM_PA, x
    return np.array([gas.elemental_mass_fraction(e) for e in gas.element_names])


class DomainCoordinates:
    """The domain coordinates of cells for a mechanism and a fuel/oxidiser pair.

    ``gas``: the mechanism's phase; ``fuel``, ``oxidizer``: mole-basis composition strings (the
    recipe's streams). Raises InputError for a composition the mechanism cannot hold or streams
    whose coupling functions are equal (no mixture fraction between them).
    """

    def __init__(self, gas: ct.Solution, fuel: str, oxidizer: str,
                 device: torch.device | str = "cpu"):
        self.fuel, self.oxidizer = fuel, oxidizer
        names = list(gas.element_names)
        weights = np.array([gas.atomic_weight(e) / 1000.0 for e in names])  # kg/mol
        coupling = np.array([COUPLING.get(e.upper() if len(e) == 1 else e.capitalize(), 0.0)
                             for e in names])
        self.element_weights = coupling / weights  # β = Σ_e (w_e / W_e) Z_e, mol O / kg
        z_fuel = stream_element_fractions(gas, fuel, "fuel")
        z_ox = stream_element_fractions(gas, oxidizer, "oxidizer")
        self.beta_fuel = float(self.element_weights @ z_fuel)
        self.beta_oxidizer = float(self.element_weights @ z_ox)
        if not self.beta_fuel > self.beta_oxidizer:
            raise InputError(f"fuel/oxidizer: '{fuel}' and '{oxidizer}' have no mixture fraction "
                             "between them (the fuel needs no oxygen the oxidiser brings)")
        self.stoichiometric = -self.beta_oxidizer / (self.beta_fuel - self.beta_oxidizer)
        self.diluent_elements = [e for e, w in zip(names, coupling) if w == 0.0]
        ns = gas.n_species
        a = element_mass_matrix(gas)  # Z_e = Σ_k a_ek Y_k, a_ek = n_ek W_e / W_k
        self.element_matrix = a
        f64 = dict(dtype=torch.float64, device=device)
        self._beta_row = torch.as_tensor(self.element_weights @ a, **f64)  # β = Y · beta_row
        self._diluent_row = torch.as_tensor(a[coupling == 0.0].sum(axis=0), **f64)
        # Complete combustion: moles of H and C per kg from Y, O per kg; products' molar masses.
        def moles(symbol: str) -> np.ndarray:
            idx = [i for i, e in enumerate(names) if e.upper() == symbol]
            return a[idx].sum(axis=0) / weights[idx[0]] if idx else np.zeros(ns)

        self._moles = torch.as_tensor(np.stack([moles("H"), moles("C"), moles("O")]), **f64)
        self.products = [s for s in PRODUCTS if s in gas.species_names]
        product_row = np.zeros(ns)
        for s in self.products:
            product_row[gas.species_index(s)] = 1.0
        self._product_row = torch.as_tensor(product_row, **f64)
        self._w_h2o = 0.018015 if "H2O" in self.products else 0.0
        self._w_co2 = 0.04401 if "CO2" in self.products else 0.0

    def describe(self) -> dict[str, Any]:
        """What a model file records of these coordinates (besides the bins)."""
        return {"fuel": self.fuel, "oxidizer": self.oxidizer,
                "stoichiometric_mixture_fraction": self.stoichiometric,
                "diluent_elements": self.diluent_elements, "product_species": self.products}

    def mixture_fraction(self, y: torch.Tensor) -> torch.Tensor:
        """Bilger's mixture fraction ``[n]`` of mass fractions ``y`` ``[n, ns]`` (not clipped)."""
        beta = y @ self._beta_row
        return (beta - self.beta_oxidizer) / (self.beta_fuel - self.beta_oxidizer)

    def complete_products(self, y: torch.Tensor) -> torch.Tensor:
        """Mass fraction ``[n]`` of products (H2O, CO2) that complete combustion of ``y``
        ``[n, ns]`` would hold: 0 where nothing can burn (no fuel or no oxygen atoms)."""
        n = y @ self._moles.T  # [n, 3]: mol H, C, O per kg
        h2o = torch.minimum(n[:, 0] / 2.0, n[:, 2]) if self._w_h2o else torch.zeros_like(n[:, 0])
        o_left = torch.clamp(n[:, 2] - h2o, min=0.0)
        co2 = torch.minimum(n[:, 1], o_left / 2.0) if self._w_co2 else torch.zeros_like(h2o)
        return self._w_h2o * h2o + self._w_co2 * co2

    def progress(self, y: torch.Tensor) -> torch.Tensor:
        """Progress ``c`` ``[n]`` in [0, 1] (0 where nothing can burn)."""
        complete = self.complete_products(y)
        have = y @ self._product_row
        c = torch.where(complete > 1e-12, have / torch.clamp(complete, min=1e-300),
                        torch.zeros_like(have))
        return torch.clamp(c, 0.0, 1.0)

    def coordinates(self, t: torch.Tensor, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[n, 5]`` coordinates in :data:`COORDINATES` order: s = Z/(Z + Z_st) with Z clipped
        to [0, 1], the diluent mass fraction, T (K), ln(P/1 atm) and c."""
        z = torch.clamp(self.mixture_fraction(y), 0.0, 1.0)
        s = z / (z + self.stoichiometric)
        return torch.stack([s, y @ self._diluent_row, t, log_pressure(p),
                            self.progress(y)], dim=1)


class OccupancyGrid:
    """Bins over :data:`COORDINATES` and the cells' bin indices; counts rows, holds the mask."""

    def __init__(self, edges: list[list[float]], device: torch.device | str = "cpu"):
        self.edges = [torch.as_tensor(e, dtype=torch.float64, device=device) for e in edges]
        self.shape = tuple(len(e) - 1 for e in edges)
        strides = np.cumprod((1,) + self.shape[::-1])[:-1][::-1]
        self.strides = torch.as_tensor(strides.copy(), dtype=torch.int64, device=device)

    def flat_index(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(flat bin index [n], inside [n] bool)`` for coordinates ``[n, 5]``; cells beyond
        the outer edges are outside (their index is 0). The last bin of each axis includes its
        upper edge."""
        flat = torch.zeros(len(coords), dtype=torch.int64, device=coords.device)
        inside = torch.ones(len(coords), dtype=torch.bool, device=coords.device)
        for axis, (edges, n) in enumerate(zip(self.edges, self.shape)):
            v = coords[:, axis].contiguous()
            i = torch.bucketize(v, edges, right=True) - 1
            i = torch.where(v == edges[-1], torch.full_like(i, n - 1), i)
            ok = (i >= 0) & (i < n)
            inside &= ok
            flat += torch.clamp(i, 0, n - 1) * self.strides[axis]
        return flat, inside

    def count(self, coords: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Add the rows ``[n, 5]`` to ``counts`` (int64, flat over the grid; new when None)."""
        if counts is None:
            counts = torch.zeros(int(np.prod(self.shape)), dtype=torch.int64)
        flat, inside = self.flat_index(coords)
        counts += torch.bincount(flat[inside].cpu(), minlength=counts.numel())
        return counts

    def mask(self, counts: torch.Tensor, min_rows: int, dilate: int) -> torch.Tensor:
        """uint8 ``[*shape]``: bins with ≥ ``min_rows`` rows, widened by ``dilate`` bins."""
        covered = (counts.view(self.shape) >= min_rows).to(torch.float32)
        if dilate > 0:
            # A max filter of width 2·dilate + 1 along each axis in turn (separable).
            for axis in range(len(self.shape)):
                moved = covered.movedim(axis, -1)
                flat = moved.reshape(-1, 1, moved.shape[-1])
                pooled = torch.nn.functional.max_pool1d(flat, 2 * dilate + 1, stride=1,
                                                        padding=dilate)
                covered = pooled.reshape(moved.shape).movedim(-1, axis)
        return (covered > 0).to(torch.uint8)


def domain_record(settings: DomainSettings, coords: DomainCoordinates, counts: torch.Tensor,
                  occupancy: torch.Tensor) -> dict[str, Any]:
    """The ``domain`` metadata of a model file (format 4)."""
    return {"check": settings.check, "coordinates": list(COORDINATES), "edges": settings.edges(),
            "min_rows": settings.min_rows, "dilate": settings.dilate, **coords.describe(),
            "covered_bins": int((counts > 0).sum()),
            "domain_bins": int(occupancy.sum()), "total_bins": int(occupancy.numel()),
            # training rows whose bin is in the domain (lone rows of a bin below min_rows with no
            # covered neighbour are not: scattered multi-scale states teach the network around
            # the manifold, one of them does not make a region trained-on)
            "rows_in_domain": float(counts[occupancy.reshape(-1).bool()].sum()
                                    / max(int(counts.sum()), 1))}


__all__ = ["COORDINATES", "DomainCoordinates", "DomainSettings", "OccupancyGrid", "domain_record",
           "stream_element_fractions"]
