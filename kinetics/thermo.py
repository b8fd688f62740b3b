"""NASA-7 thermodynamics in torch: mixture enthalpy, heat capacity, and T from enthalpy.

Evaluated in float64 whatever the network's precision, so that the enthalpy a step conserves is
exact to ~1e-12 relative. Shapes: ``T`` ``[n]`` (K), ``Y`` ``[n, ns]`` (mass fractions);
results per unit mass (J/kg, J/kg/K).
"""

from __future__ import annotations

import cantera as ct
import numpy as np
import torch

from mechanisms.errors import InputError


class Nasa7:
    """The NASA-7 polynomials of a mechanism's species, as tensors on one device."""

    def __init__(self, gas: ct.Solution, device: torch.device | str = "cpu"):
        low, high, t_mid = [], [], []
        for sp in gas.species():
            if type(sp.thermo).__name__ != "NasaPoly2":
                raise InputError(f"mechanism: species '{sp.name}' has {type(sp.thermo).__name__} "
                                 "thermo; the surrogate needs NASA-7 polynomials")
            c = sp.thermo.coeffs
            t_mid.append(c[0])
            high.append(c[1:8])
            low.append(c[8:15])
        f64 = dict(dtype=torch.float64, device=device)
        self.t_mid = torch.tensor(t_mid, **f64)
        self.low = torch.tensor(np.asarray(low), **f64)  # [ns, 7]
        self.high = torch.tensor(np.asarray(high), **f64)
        self.r_over_w = torch.tensor(ct.gas_constant / gas.molecular_weights, **f64)  # J/kg/K

    def to(self, device: torch.device | str) -> Nasa7:
        for name in ("t_mid", "low", "high", "r_over_w"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _select(self, t: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return torch.where(t[:, None] > self.t_mid[None, :], high, low)

    def species_enthalpy(self, t: torch.Tensor) -> torch.Tensor:
        """Species enthalpies ``[n, ns]`` (J/kg) at ``t`` ``[n]``."""
        basis = torch.stack([t, t ** 2 / 2, t ** 3 / 3, t ** 4 / 4, t ** 5 / 5,
                             torch.ones_like(t)], dim=1)  # [n, 6]
        h_low = basis @ self.low[:, :6].T
        h_high = basis @ self.high[:, :6].T
        return self._select(t, h_low, h_high) * self.r_over_w

    def species_cp(self, t: torch.Tensor) -> torch.Tensor:
        """Species heat capacities ``[n, ns]`` (J/kg/K)."""
        basis = torch.stack([torch.ones_like(t), t, t ** 2, t ** 3, t ** 4], dim=1)
        cp_low = basis @ self.low[:, :5].T
        cp_high = basis @ self.high[:, :5].T
        return self._select(t, cp_low, cp_high) * self.r_over_w

    def enthalpy(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixture enthalpy ``[n]`` (J/kg)."""
        return (self.species_enthalpy(t) * y).sum(dim=1)

    def cp(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixture heat capacity at constant pressure ``[n]`` (J/kg/K)."""
        return (self.species_cp(t) * y).sum(dim=1)

    def temperature(self, h: torch.Tensor, y: torch.Tensor, t_guess: torch.Tensor,
                    rtol: float = 1e-12, max_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``enthalpy(T, y) = h`` for T by Newton's method from ``t_guess``.

        Returns ``(T [n], converged [n] bool)``; steps are limited to 500 K and T is kept in
        [100, 6000] K so that a bad guess cannot run away.
        """
        h = h.to(torch.float64)
        t = t_guess.to(torch.float64).clone()
        converged = torch.zeros_like(t, dtype=torch.bool)
        for _ in range(max_iter):
            dt = (h - self.enthalpy(t, y)) / self.cp(t, y)
            dt = torch.clamp(dt, -500.0, 500.0)
            t = torch.clamp(t + dt, 100.0, 6000.0)
            converged = torch.abs(dt) <= rtol * t
            if bool(converged.all()):
                break
        return t, converged
