"""What a reduction method receives and returns: the contract between ``run.py`` and a method module.

A method is a function ``reduce(inputs: MethodInputs) -> MethodOutcome``; ``run.py`` registers it
under its name with a :class:`Method` entry, then writes, verifies and reports its best candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechanisms.reduction.config import ReductionConfig
from mechanisms.reduction.evaluate import CandidateScore, Evaluator
from mechanisms.reduction.targets import ReferenceTargets


@dataclass
class MethodInputs:
    """One reduction problem as a method sees it.

    ``forced`` ``[ns]`` bool: species every candidate keeps; ``out_dir``: where a method may keep
    files of its own (DeePMR's checkpoint); ``log(str)`` reports progress lines.
    """

    config: ReductionConfig
    reference: ReferenceTargets
    evaluator: Evaluator
    forced: np.ndarray
    out_dir: Path
    progress: bool
    log: Callable[[str], None]


@dataclass
class MethodOutcome:
    """Candidates best first (each passed in memory) and what the method wants reported."""

    candidates: list[CandidateScore]
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registry entry: the method's ``reduce`` function and whether it is a graph method (it
    needs target species, and a sensitivity analysis may follow it)."""

    reduce: Callable[[MethodInputs], MethodOutcome]
    graph: bool = False
