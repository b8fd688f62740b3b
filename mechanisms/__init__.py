"""Mechanism I/O and the shared Cantera layer.

Everything that builds a ``ct.Solution`` or interprets the state-vector layout lives here, so that
`sampling`, `kinetics` and `service` share one home for it.
"""

from mechanisms.composition import mixture_mass_fractions, parse_composition
from mechanisms.errors import DeepkinError, InputError
from mechanisms.loading import Mechanism, load_mechanism, solution_from_yaml
from mechanisms.state import column_names, set_gas_state, state_of_gas, state_width

__all__ = [
    "DeepkinError",
    "InputError",
    "Mechanism",
    "column_names",
    "load_mechanism",
    "mixture_mass_fractions",
    "parse_composition",
    "set_gas_state",
    "solution_from_yaml",
    "state_of_gas",
    "state_width",
]
