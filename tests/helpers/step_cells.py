"""Cells that send a chemistry step down its rare paths, for the step-equality tests."""

from __future__ import annotations

import cantera as ct
import numpy as np

from benchmarks.state_mixes import AIR


def edge_cells(gas: ct.Solution, fuel: str, ignition: np.ndarray, pressure_min_pa: float
               ) -> np.ndarray:
    """Three cells ``[3, 2+ns]`` (T in K, P in Pa, Y): the fresh stoichiometric mixture at 300 K
    (frozen), the middle row of ``ignition`` (a 0D ignition's states) at 1/100 of
    ``pressure_min_pa``, the model's lowest trained pressure (outside the domain: Cantera), and
    its first row at 1,100 K (outside hydrogen's trained temperatures, from 1,176 K)."""
    gas.set_equivalence_ratio(1.0, fuel, AIR)
    gas.TP = 300.0, ct.one_atm
    cold = np.r_[gas.T, gas.P, gas.Y]
    thin, warm = ignition[len(ignition) // 2].copy(), ignition[0].copy()
    thin[1] = pressure_min_pa / 100
    warm[0] = 1100.0
    return np.stack([cold, thin, warm])
