"""Offline dataset generation: from a Cantera mechanism to one labelled HDF5 dataset file.

:func:`run_sampling` takes a :class:`SamplingConfig` (YAML and/or flags; ``parse_values`` and
``parse_rows`` read the command-line forms), runs the canonical manifold cases (0D autoignition,
1D free and counterflow flames), spreads states over the thermochemical space from them
(multi-scale, perturbed, EMCS, equilibrium approach), labels every state with one adiabatic
constant-pressure Cantera step of ``dt`` and writes the rows through the one
:class:`DatasetWriter`, resumably (a run journal beside the file) and in parallel on Dask. It
returns a :class:`SamplingSummary`. The file format and its readers (``read_dataset``,
``summarise_dataset``) live in ``mechanisms.dataset_file``, below both sampling and kinetics.
"""

from sampling.config import SamplingConfig, parse_rows, parse_values
from sampling.dataset_writer import DatasetWriter
from sampling.pipeline import SamplingSummary, run_sampling

__all__ = ["DatasetWriter", "SamplingConfig", "SamplingSummary", "parse_rows", "parse_values",
           "run_sampling"]
