"""The state-vector layout shared by every package.

One cell is ``[T, P, Y_1 ... Y_ns]``: temperature in K, pressure in Pa, mass fractions in the
mechanism's species order. Arrays of cells are ``[n_cells, 2 + ns]``, C order, float64 wherever
Cantera touches them. Code outside this module reads and builds states through the helpers below
(they accept numpy arrays and torch tensors alike, one row or many), never through literal column
numbers.
"""

from __future__ import annotations

from typing import TypeVar

import cantera as ct
import numpy as np

T_COLUMN = 0
P_COLUMN = 1
Y_START = 2
ONE_ATM_PA = 101325.0  # Pa; the unit of the ``*_atm`` config keys and of ln(P / 1 atm)
PRESSURE_RANGE_PA = (1.0, 1.0e9)  # Pa; every state deepkin samples or steps lies here

Array = TypeVar("Array")  # numpy.ndarray or torch.Tensor


def state_width(n_species: int) -> int:
    """Number of columns of a state array for ``n_species`` species."""
    return Y_START + n_species


def n_species_of(width: int) -> int:
    """Number of species of a state array with ``width`` columns."""
    return width - Y_START


def column_names(species_names: list[str] | tuple[str, ...]) -> list[str]:
    """Column labels of a state array: ``["T", "P", *species_names]``."""
    return ["T", "P", *species_names]


def temperature(states: Array) -> Array:
    """T (K): ``[n]`` of ``[n, 2+ns]`` states (a scalar of one row); a view, not a copy."""
    return states[..., T_COLUMN]


def pressure(states: Array) -> Array:
    """P (Pa): ``[n]`` of ``[n, 2+ns]`` states (a scalar of one row); a view, not a copy."""
    return states[..., P_COLUMN]


def thermal_columns(states: Array) -> Array:
    """``[n, 2]`` view of T (K) and P (Pa)."""
    return states[..., :Y_START]


def mass_fractions(states: Array) -> Array:
    """Y: ``[n, ns]`` of ``[n, 2+ns]`` states (``[ns]`` of one row); a view, not a copy."""
    return states[..., Y_START:]


def join_states(t: Array, p: Array, y: Array) -> Array:
    """``[n, 2+ns]`` states from T ``[n]`` (K), P ``[n]`` (Pa) and Y ``[n, ns]``.

    Torch tensors give a tensor (on their device), anything else a float64 numpy array.
    """
    if not isinstance(y, np.ndarray) and hasattr(y, "new_empty"):
        import torch

        return torch.cat([t[:, None], p[:, None], y], dim=1)
    y = np.asarray(y, dtype=float)
    out = np.empty((y.shape[0], state_width(y.shape[1])))
    out[:, T_COLUMN] = t
    out[:, P_COLUMN] = p
    out[:, Y_START:] = y
    return out


def element_mass_matrix(gas: ct.Solution) -> np.ndarray:
    """``A [n_elements, ns]``: element mass fractions ``Z = A @ Y`` (``a_ek = n_ek W_e / W_k``)."""
    return np.array([[gas.n_atoms(k, e) * gas.atomic_weight(e) / gas.molecular_weights[k]
                      for k in range(gas.n_species)] for e in range(gas.n_elements)])


def set_gas_state(gas: ct.Solution, state: np.ndarray) -> None:
    """Set ``gas`` to one state row ``[T (K), P (Pa), Y...]``; Cantera normalises Y."""
    gas.TPY = float(state[T_COLUMN]), float(state[P_COLUMN]), state[Y_START:]


def state_of_gas(gas: ct.Solution) -> np.ndarray:
    """The current state of ``gas`` as one float64 row ``[T (K), P (Pa), Y...]``."""
    row = np.empty(state_width(gas.n_species))
    row[T_COLUMN] = gas.T
    row[P_COLUMN] = gas.P
    row[Y_START:] = gas.Y
    return row


def normalise_mass_fractions(states: np.ndarray) -> np.ndarray:
    """Clip Y at 0 and rescale each row so that ΣY = 1, in place; returns ``states``."""
    y = states[:, Y_START:]
    np.clip(y, 0.0, None, out=y)
    y /= y.sum(axis=1, keepdims=True)
    return states
