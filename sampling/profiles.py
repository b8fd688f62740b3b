"""Drawing states along a one-dimensional profile (a trajectory in time or a flame in space).

The draw density mixes a uniform part along the coordinate with a part proportional to an
activity signal (|dT/dt|, heat-release rate), so that states are denser where the chemistry is
fast while quiet stretches (induction, preheat) stay represented.
"""

from __future__ import annotations

import numpy as np

from mechanisms.state import normalise_mass_fractions


def split_count(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` whole numbers differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def draw_along_profile(coordinate: np.ndarray, states: np.ndarray, activity: np.ndarray,
                       n: int, activity_weight: float, rng: np.random.Generator,
                       uniform_coordinate: np.ndarray | None = None) -> np.ndarray:
    """Draw ``n`` states interpolated along a profile.

    ``coordinate`` ``[m]`` is increasing (time in s or position in m), ``states`` ``[m, 2+ns]``,
    ``activity`` ``[m]`` ≥ 0. The density along the coordinate is
    ``(1 − w)/L + w·activity/∫activity`` with ``w = activity_weight``; states between profile
    points are linear interpolations (ΣY stays 1). ``uniform_coordinate`` (increasing, ``[m]``)
    replaces ``coordinate`` for the uniform part, e.g. log time so that every decade of a
    trajectory (induction, ignition, recombination, equilibrium) gets its share. Returns
    ``[n, 2+ns]``.
    """
    x = np.asarray(coordinate, dtype=float)
    a = np.abs(np.asarray(activity, dtype=float))
    length = x[-1] - x[0]
    if len(x) < 2 or length <= 0:
        return np.repeat(states[:1], n, axis=0)
    seg = np.diff(x)
    if uniform_coordinate is not None:
        useg = np.diff(np.asarray(uniform_coordinate, dtype=float))
        uniform_mass = useg / useg.sum()
    else:
        uniform_mass = seg / length
    act_mid = 0.5 * (a[1:] + a[:-1]) * seg
    total_act = act_mid.sum()
    act_mass = act_mid / total_act if total_act > 0 else uniform_mass
    w = min(max(activity_weight, 0.0), 1.0)
    mass = (1.0 - w) * uniform_mass + w * act_mass
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    cdf /= cdf[-1]
    u = rng.random(n)
    idx = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(seg) - 1)
    frac = np.where(mass[idx] > 0, (u - cdf[idx]) / np.maximum(cdf[idx + 1] - cdf[idx], 1e-300), 0.0)
    frac = np.clip(frac, 0.0, 1.0)[:, None]
    return normalise_mass_fractions(states[idx] * (1.0 - frac) + states[idx + 1] * frac)
