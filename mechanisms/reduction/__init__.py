"""Mechanism reduction: DRG, DRGEP, PFA (each optionally followed by a sensitivity analysis) and
DeePMR against ignition-delay, laminar flame-speed and PSR-extinction targets and, always, the
equilibrium temperature, from a pyMARS-compatible input file.

Every method scores candidate species masks through one evaluation core (``targets.py`` simulates a
condition and caches the detailed reference, ``evaluate.py`` scores masks through the executor and
re-runs a written file, ``constraints.py`` judges them against the bounds); ``drg.py``,
``drgep.py``, ``pfa.py`` and ``deepmr.py`` each turn that into a reduced model, ``sensitivity.py``
refines a graph method's, and ``run.py`` looks them up by name in :data:`METHODS`, writes the
answer (``writer.py``, ``chemkin.py``), verifies it and reports (``report.py``). A script reduces a
mechanism with ``run_reduction(load_reduce_config("reduce.yaml"), "out")``, or builds its own search
from :func:`reference_targets`, :class:`Evaluator` and an importance function.
"""

from mechanisms.reduction.chemkin import write_chemkin
from mechanisms.reduction.config import ReductionConfig
from mechanisms.reduction.deepmr import run_deepmr
from mechanisms.reduction.drg import drg_importance
from mechanisms.reduction.drgep import drgep_importance
from mechanisms.reduction.evaluate import CandidateScore, Evaluator, verify_written
from mechanisms.reduction.input_file import load_reduce_config, parse_reduce_config
from mechanisms.reduction.pfa import pfa_importance
from mechanisms.reduction.run import METHODS, run_reduction
from mechanisms.reduction.targets import ReferenceTargets, reference_targets, run_condition
from mechanisms.reduction.threshold_search import threshold_sweep
from mechanisms.reduction.writer import ReducedModelBuilder

__all__ = [
    "METHODS",
    "CandidateScore",
    "Evaluator",
    "ReducedModelBuilder",
    "ReductionConfig",
    "ReferenceTargets",
    "drg_importance",
    "drgep_importance",
    "load_reduce_config",
    "parse_reduce_config",
    "pfa_importance",
    "reference_targets",
    "run_condition",
    "run_deepmr",
    "run_reduction",
    "threshold_sweep",
    "verify_written",
    "write_chemkin",
]
