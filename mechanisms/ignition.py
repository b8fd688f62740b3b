"""Ignition delay: the first crossing of T0 + 400 K (pyMARS's definition)."""

from __future__ import annotations

import numpy as np

IGNITION_RISE_K = 400.0


def crossing_time(times: np.ndarray, temps: np.ndarray, level: float) -> float | None:
    """First time ``temps`` reaches ``level`` (K), interpolated linearly within the step.

    ``times`` (s) and ``temps`` (K) are ``[m]``; returns None when ``level`` is never reached.
    On a coarse step grid the interpolation matters: ignition taking 2–3 steps would otherwise
    carry a one-step (30–50 %) error.
    """
    above = np.nonzero(np.asarray(temps) >= level)[0]
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(times[0])
    t0, t1, y0, y1 = times[i - 1], times[i], temps[i - 1], temps[i]
    return float(t0 + (level - y0) * (t1 - t0) / (y1 - y0))
