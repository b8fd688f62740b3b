"""Optional outputs of a step, evaluated by Cantera at the states it returned.

:data:`OUTPUTS` names them: net production rates ``[n, ns]`` (kmol/m³/s) and heat-release rate
``[n]`` (W/m³). :func:`evaluate_outputs` computes the requested ones for states ``[n, 2+ns]``
``[T (K), P (Pa), Y...]`` with the integrator's own ``ct.Solution`` (``Integrator.gas``), so a
caller such as the service needs no Cantera of its own.
"""

from __future__ import annotations

import cantera as ct
import numpy as np

from mechanisms.errors import InputError, cantera_message
from mechanisms.state import set_gas_state

OUTPUTS = ("net_production_rates", "heat_release_rate")


def evaluate_outputs(gas: ct.Solution, states: np.ndarray, names: tuple[str, ...]
                     ) -> dict[str, np.ndarray]:
    """The outputs ``names`` (of :data:`OUTPUTS`) at ``states`` ``[n, 2+ns]`` (float64 or
    float32, read exactly as given), float64; InputError naming the first row Cantera cannot
    evaluate. ``gas`` is the model's mechanism (its species order is the states')."""
    if not names:
        return {}
    rates = np.empty((len(states), gas.n_species)) if "net_production_rates" in names else None
    hrr = np.empty(len(states)) if "heat_release_rate" in names else None
    for i, row in enumerate(states):
        try:
            set_gas_state(gas, row)
            if rates is not None:
                rates[i] = gas.net_production_rates
            if hrr is not None:
                hrr[i] = gas.heat_release_rate
        except ct.CanteraError as exc:
            raise InputError(f"outputs: Cantera cannot evaluate row {i} ({cantera_message(exc)})")
    out = {}
    if rates is not None:
        out["net_production_rates"] = rates
    if hrr is not None:
        out["heat_release_rate"] = hrr
    return out
