"""A-posteriori flame runs in OpenFOAM, deepkin chemistry against OpenFOAM's ODE chemistry on
the same case: 1D premixed flames (speed) and the 2D counterflow diffusion flame (peak
temperature and its position). The runs themselves live in ``couplers/openfoam/flame_runs.py``
(``deepkin refine`` and ``benchmarks/openfoam_flames.py`` use them too); here they carry the
tests' service token."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from couplers.openfoam import flame_runs
from couplers.openfoam.flame_runs import (  # noqa: F401 - re-exported for the tests
    COUNTERFLOW_FUEL,
    COUNTERFLOW_STEPS_PER_CALL,
    CounterflowRun,
    PremixedRun,
)
from tests.helpers.openfoam import TOKEN


def premixed_run(folder: Path, url: str, model: str, chemistry: str, phi: float,
                 end_time_s: float, **options) -> PremixedRun:
    """:func:`couplers.openfoam.flame_runs.premixed_run` (1 atm, 300 K by default) with the
    tests' token."""
    return flame_runs.premixed_run(folder, url, model, chemistry, phi, end_time_s, token=TOKEN,
                                   **options)


def counterflow_run(folder: Path, url: str, model: str, chemistry: str, end_time_s: float,
                    **options) -> CounterflowRun:
    """:func:`couplers.openfoam.flame_runs.counterflow_run` (H2/N2 50/50 against air, 1 atm,
    300 K, inlets at 1 m/s by default) with the tests' token."""
    return flame_runs.counterflow_run(folder, url, model, chemistry, end_time_s, token=TOKEN,
                                      **options)


def with_frozen_temperature(src: Path, dst: Path, frozen_k: float, name: str) -> Path:
    """A copy of model ``src`` whose frozen temperature is ``frozen_k`` (K), served as ``name``."""
    from kinetics.model.model_file import read_model_file, resave_model

    meta, tensors, yaml_text = read_model_file(src)
    resave_model(dst, dataclasses.replace(meta, frozen_temperature_k=frozen_k, name=name),
                 tensors, yaml_text)
    return dst
