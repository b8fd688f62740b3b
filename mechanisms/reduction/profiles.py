"""States along a detailed run, kept for the graph methods (DRG, DRGEP, PFA), as pyMARS samples them."""

from __future__ import annotations

import numpy as np

SAMPLE_POINTS = 20  # states per detailed run kept for the graph methods (as pyMARS)


def sample_profile(temps: np.ndarray, states: np.ndarray) -> np.ndarray:
    """``SAMPLE_POINTS`` states where T first reaches evenly spaced fractions of its total rise.

    ``temps`` is ``[m]`` (K), ``states`` ``[m, 2 + ns]``; returns ``[SAMPLE_POINTS, 2 + ns]``. The
    rise is counted from the first state to the hottest one, so a flame profile (unburnt → burnt)
    and an ignition run sample alike.
    """
    rise = temps.max() - temps[0]
    fractions = np.arange(1, SAMPLE_POINTS + 1) / SAMPLE_POINTS
    idx = [int(np.argmax(temps >= temps[0] + f * rise - 1e-9)) for f in fractions]
    return states[idx].copy()


def spread(states: np.ndarray) -> np.ndarray:
    """``SAMPLE_POINTS`` rows of ``states`` ``[m, 2 + ns]`` evenly spread over its length (rows
    repeat when ``m`` is smaller)."""
    idx = np.round(np.linspace(0, len(states) - 1, SAMPLE_POINTS)).astype(int)
    return states[idx].copy()
