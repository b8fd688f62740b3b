"""The state-vector layout shared by every package.

One cell is ``[T, P, Y_1 ... Y_ns]``: temperature in K, pressure in Pa, mass fractions in the
mechanism's species order. Arrays of cells are ``[n_cells, 2 + ns]``, C order, float64 wherever
Cantera touches them.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

T_COLUMN = 0
P_COLUMN = 1
Y_START = 2
ONE_ATM_PA = 101325.0  # Pa; the unit of the ``*_atm`` config keys and of ln(P / 1 atm)


def state_width(n_species: int) -> int:
    """Number of columns of a state array for ``n_species`` species."""
    return Y_START + n_species


def column_names(species_names: list[str] | tuple[str, ...]) -> list[str]:
    """Column labels of a state array: ``["T", "P", *species_names]``."""
    return ["T", "P", *species_names]


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
