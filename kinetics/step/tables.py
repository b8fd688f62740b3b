"""The constant tables of the compiled step (:mod:`kinetics.step.compiled_step`), built once from a
model's mechanism and file: mixture NASA-7 coefficients per temperature interval, the occupancy
grid as one padded lookup, the mixture-coordinate rows, and the element matrix.

Each table turns per-call work into one product or one lookup, so that a step of a few cells costs
few tensor operations:

- :func:`thermo_table`: every species' NASA-7 enthalpy and heat-capacity coefficients (from
  :class:`kinetics.step.thermo.Nasa7`, J/kg and J/kg/K on ``[1, T, …, T⁵]``) laid out per temperature
  interval between the mechanism's distinct ``T_mid`` values, so that ``Y @ table`` gives a
  cell's mixture polynomials for every interval at once;
- :func:`occupancy_table`: the occupancy grid (``kinetics/model/domain.py``) with one empty bin added at
  both ends of every axis, and bin edges padded to one ``[5, E]`` table, so that one
  ``searchsorted`` and one lookup give the same answer as ``OccupancyGrid.flat_index`` and the
  mask (cells beyond the outer edges land in the empty bins);
- :func:`mixture_rows`: ``Y @ rows`` gives β (Bilger's coupling function), the diluent's mass
  fraction, the products' mass fraction and mol H, C, O per kg (``DomainCoordinates``);
- :func:`element_tables`: the element mass matrix of the projection (elements some non-inert
  species carries) and its pairwise products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cantera as ct
import numpy as np
import torch

from kinetics.model.domain import DomainCoordinates, OccupancyGrid
from kinetics.step.thermo import Nasa7
from mechanisms.state import element_mass_matrix

N_COORDINATES = 5  # mixture fraction, diluent, T, ln(P/1 atm), progress (kinetics.model.domain)


def thermo_table(gas: ct.Solution, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bounds [J-1], table [ns, J·12])`` float64: the mechanism's distinct NASA-7 ``T_mid``
    (K, increasing) and, for each of the J intervals they cut (interval j: the bounds below T
    number j; a species takes its high-range fit where T > its ``T_mid``, as Nasa7), the species'
    enthalpy coefficients (6, J/kg) then heat-capacity coefficients (6, J/kg/K) on
    ``[1, T, T², T³, T⁴, T⁵]``."""
    nasa = Nasa7(gas, "cpu")
    ns = nasa.n_species
    t_mid = nasa.t_mid
    coefficients = nasa.coefficients  # [6, 4 ns]: h low, h high, cp low, cp high
    bounds = torch.unique(t_mid)
    parts = []
    for j in range(len(bounds) + 1):
        # In interval j, T lies above bounds[:j]: a species is on its high range when its T_mid
        # is one of those.
        high = (t_mid <= bounds[j - 1]) if j else torch.zeros(ns, dtype=torch.bool)
        h = torch.where(high[None, :], coefficients[:, ns:2 * ns], coefficients[:, :ns])
        cp = torch.where(high[None, :], coefficients[:, 3 * ns:], coefficients[:, 2 * ns:3 * ns])
        parts.append(torch.cat([h.T, cp.T], dim=1))  # [ns, 12]
    table = torch.cat(parts, dim=1)
    return bounds.to(device), table.to(device)


@dataclass
class OccupancyTable:
    """The padded occupancy grid: ``edges`` ``[5, E]`` (each axis' bin edges with its last edge
    raised by one ulp, so that a value equal to it falls in the last bin, padded with +inf),
    ``strides`` ``[5, 1]`` int64 of the grid with one bin added at both ends of every axis, and
    ``occupancy`` ``[bins]`` bool of that grid (False in the added bins)."""

    edges: torch.Tensor
    strides: torch.Tensor
    occupancy: torch.Tensor


def occupancy_table(edges: list[list[float]], occupancy: torch.Tensor, device: torch.device
                    ) -> OccupancyTable:
    """The lookup table of a model's grid (``domain.edges``, ``domain.occupancy`` uint8)."""
    grid = OccupancyGrid(edges, "cpu")
    width = max(len(e) for e in grid.edges)
    table = torch.full((N_COORDINATES, width), math.inf, dtype=torch.float64)
    for axis, e in enumerate(grid.edges):
        table[axis, :len(e)] = e
        table[axis, len(e) - 1] = math.nextafter(float(e[-1]), math.inf)
    padded = tuple(n + 2 for n in grid.shape)
    strides = np.cumprod((1,) + padded[::-1])[:-1][::-1].copy()
    occupied = torch.zeros(padded, dtype=torch.bool)
    occupied[tuple(slice(1, -1) for _ in padded)] = occupancy.reshape(grid.shape).bool()
    return OccupancyTable(table.to(device),
                          torch.as_tensor(strides, dtype=torch.int64, device=device)[:, None],
                          occupied.reshape(-1).to(device))


@dataclass
class MixtureRows:
    """``rows`` ``[ns, 6]`` float64: ``Y @ rows`` = β (mol O/kg), the diluent's mass fraction,
    the products' (H2O, CO2) mass fraction, mol H, C, O per kg; with the constants that turn
    them into the domain coordinates (kinetics/model/domain.py)."""

    rows: torch.Tensor
    beta_oxidizer: float
    beta_span: float  # β_fuel − β_oxidizer
    stoichiometric: float  # Z_st
    w_h2o: float  # kg/mol, 0 without H2O in the mechanism
    w_co2: float


def mixture_rows(gas: ct.Solution, fuel: str, oxidizer: str, device: torch.device) -> MixtureRows:
    """The rows of the mixture coordinates for the model's fuel and oxidiser streams."""
    c = DomainCoordinates(gas, fuel, oxidizer, "cpu")
    rows = torch.cat([c._beta_row[:, None], c._diluent_row[:, None], c._product_row[:, None],
                      c._moles.T], dim=1)
    return MixtureRows(rows.to(device), float(c.beta_oxidizer),
                       float(c.beta_fuel - c.beta_oxidizer), float(c.stoichiometric),
                       float(c._w_h2o), float(c._w_co2))


def element_tables(gas: ct.Solution, inert: np.ndarray, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a [ne, ns], products [ns, ne²])`` float64: the element mass fractions Z_e = Σ_k a_ek Y_k
    (a_ek = n_ek W_e / W_k) of the elements some non-inert species carries (the others' residual
    is zero: inert Y is held fixed), and ``a_ek a_fk`` per species (one product gives the
    projection's matrices)."""
    elements = element_mass_matrix(gas)
    keep = elements[:, ~inert].any(axis=1)
    a = torch.as_tensor(elements[keep], dtype=torch.float64)
    products = (a[:, None, :] * a[None, :, :]).reshape(-1, a.shape[1]).T.contiguous()
    return a.to(device), products.to(device)


__all__ = ["MixtureRows", "OccupancyTable", "element_tables", "mixture_rows", "occupancy_table",
           "thermo_table"]
