"""The shared Cantera layer that sampling, kinetics, reduction and the service stand on.

One home for each kind of plumbing: loading a mechanism by shipped name or path and building its
``ct.Solution`` once per process (:func:`load_mechanism`, :class:`Mechanism`), the state-vector
layout ``[T (K), P (Pa), Y_1..Y_ns]`` and its helpers (``state``), compositions and φ mixtures,
the adiabatic reactor with its named tolerances (:class:`ReactorStep`, :func:`trajectory`), the
ignition-delay crossing, the dataset file's schema and readers (:func:`dataset_facts`,
:func:`read_dataset`, :func:`summarise_dataset`), the Dask executor (:func:`make_executor`),
durable atomic writes, YAML configuration files, and the one-line user errors
(:class:`DeepkinError`, :class:`InputError`). Mechanism reduction lives in the subpackage
``mechanisms.reduction`` (not imported from here). Names are imported on first use.
"""

from __future__ import annotations

from mechanisms.lazy_exports import lazy_exports

_HOMES = {
    "atomic_write": "mechanisms.atomic_io", "atomic_write_text": "mechanisms.atomic_io",
    "mixture_mass_fractions": "mechanisms.composition", "parse_composition": "mechanisms.composition",
    "check_keys": "mechanisms.config_file", "read_yaml_mapping": "mechanisms.config_file",
    "DatasetFacts": "mechanisms.dataset_file", "dataset_facts": "mechanisms.dataset_file",
    "read_dataset": "mechanisms.dataset_file", "summarise_dataset": "mechanisms.dataset_file",
    "DeepkinError": "mechanisms.errors", "InputError": "mechanisms.errors",
    "Executor": "mechanisms.executor", "make_executor": "mechanisms.executor",
    "IGNITION_RISE_K": "mechanisms.ignition", "crossing_time": "mechanisms.ignition",
    "Mechanism": "mechanisms.loading", "load_mechanism": "mechanisms.loading",
    "solution_from_yaml": "mechanisms.loading",
    "ReactorStep": "mechanisms.reactor", "Tolerances": "mechanisms.reactor",
    "reactor_network": "mechanisms.reactor", "trajectory": "mechanisms.reactor",
    "ONE_ATM_PA": "mechanisms.state", "join_states": "mechanisms.state",
    "mass_fractions": "mechanisms.state", "pressure": "mechanisms.state",
    "set_gas_state": "mechanisms.state", "state_of_gas": "mechanisms.state",
    "state_width": "mechanisms.state", "temperature": "mechanisms.state",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
