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
    """The NASA-7 polynomials of a mechanism's species, as tensors on one device.

    Species enthalpy and heat capacity come from one product of the basis ``[1, T, T², T³, T⁴,
    T⁵]`` ``[n, 6]`` with a coefficient matrix ``[6, 4·ns]`` (h and cp, low and high range, R/W
    folded in): one small matmul per evaluation, each Newton iteration one evaluation.
    """

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
        r_over_w = ct.gas_constant / gas.molecular_weights  # J/kg/K
        columns = [_enthalpy_coefficients(np.asarray(low)), _enthalpy_coefficients(np.asarray(high)),
                   _cp_coefficients(np.asarray(low)), _cp_coefficients(np.asarray(high))]
        f64 = dict(dtype=torch.float64, device=device)
        self.n_species = gas.n_species
        self.t_mid = torch.tensor(t_mid, **f64)
        self.coefficients = torch.tensor(np.hstack([c * r_over_w for c in columns]), **f64)

    def to(self, device: torch.device | str) -> Nasa7:
        for name in ("t_mid", "coefficients"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def species_properties(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Species enthalpies (J/kg) and heat capacities (J/kg/K), each ``[n, ns]``, at ``t`` ``[n]``."""
        t2 = t * t
        basis = torch.stack([torch.ones_like(t), t, t2, t2 * t, t2 * t2, t2 * t2 * t], dim=1)
        both = basis @ self.coefficients  # [n, 4 ns]: h low, h high, cp low, cp high
        ns = self.n_species
        high = t[:, None] > self.t_mid[None, :]
        return (torch.where(high, both[:, ns:2 * ns], both[:, :ns]),
                torch.where(high, both[:, 3 * ns:], both[:, 2 * ns:3 * ns]))

    def species_enthalpy(self, t: torch.Tensor) -> torch.Tensor:
        """Species enthalpies ``[n, ns]`` (J/kg) at ``t`` ``[n]``."""
        return self.species_properties(t)[0]

    def species_cp(self, t: torch.Tensor) -> torch.Tensor:
        """Species heat capacities ``[n, ns]`` (J/kg/K)."""
        return self.species_properties(t)[1]

    def enthalpy(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixture enthalpy ``[n]`` (J/kg)."""
        return (self.species_enthalpy(t) * y).sum(dim=1)

    def cp(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixture heat capacity at constant pressure ``[n]`` (J/kg/K)."""
        return (self.species_cp(t) * y).sum(dim=1)

    def temperature(self, h: torch.Tensor, y: torch.Tensor, t_guess: torch.Tensor,
                    rtol: float = 1e-12, max_iter: int = 50,
                    guess_properties: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``enthalpy(T, y) = h`` for T by Newton's method from ``t_guess``.

        Returns ``(T [n], converged [n] bool)``; steps are limited to 500 K and T is kept in
        [100, 6000] K so that a bad guess cannot run away. ``guess_properties``: the
        :meth:`species_properties` at ``t_guess`` when the caller has them (one evaluation less).
        """
        h = h.to(torch.float64)
        t = t_guess.to(torch.float64).clone()
        converged = torch.zeros_like(t, dtype=torch.bool)
        for k in range(max_iter):
            h_k, cp_k = guess_properties if k == 0 and guess_properties else self.species_properties(t)
            dt = (h - (h_k * y).sum(dim=1)) / (cp_k * y).sum(dim=1)
            dt = torch.clamp(dt, -500.0, 500.0)
            t = torch.clamp(t + dt, 100.0, 6000.0)
            converged = torch.abs(dt) <= rtol * t
            if bool(converged.all()):
                break
        return t, converged


def _enthalpy_coefficients(a: np.ndarray) -> np.ndarray:
    """``[6, ns]`` coefficients of h/R on ``[1, T, …, T⁵]`` from NASA-7 ``a1…a7`` ``[ns, 7]``:
    h/R = a6 + a1 T + a2 T²/2 + a3 T³/3 + a4 T⁴/4 + a5 T⁵/5."""
    return np.stack([a[:, 5], a[:, 0], a[:, 1] / 2, a[:, 2] / 3, a[:, 3] / 4, a[:, 4] / 5])


def _cp_coefficients(a: np.ndarray) -> np.ndarray:
    """``[6, ns]`` coefficients of cp/R on ``[1, T, …, T⁵]``: a1 + a2 T + a3 T² + a4 T³ + a5 T⁴."""
    return np.stack([a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], np.zeros(len(a))])
