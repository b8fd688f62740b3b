"""Solved flame profiles kept across runs, keyed by everything that determines them.

A free flame or a counterflow strain sweep on GRI-3.0 costs 10 s to 10 min, and the same flames
come back in every dataset built on the same grid: a recipe and its replay slice (other seeds,
other row counts), a rebuild after a lost file, every refinement round. The solution depends only
on the mechanism, the case and the solver settings, so it is computed once and kept as one
``.npz`` (arrays only, no pickle) under ``<cache>/profiles/`` (:func:`mechanisms.cache.cache_root`),
written atomically. A file that does not read is solved again and replaced. Failures are not
kept: a flame that does not converge is retried by the next run. ``DEEPKIN_PROFILE_CACHE=off``
turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.atomic_io import atomic_write_npz
from mechanisms.cache import cache_root

# Bump when the flame solvers' settings (sampling/manifold.py) change what a profile holds.
PROFILE_VERSION = 1

Profile = tuple[float, np.ndarray, np.ndarray, np.ndarray]
"""``(strain rate (1/s) or 0, coordinate [m], states [m, 2+ns], activity [m])``."""


def profile_cache_dir() -> Path | None:
    """The folder of cached profiles; None when ``DEEPKIN_PROFILE_CACHE`` is ``off`` or ``0``."""
    if os.environ.get("DEEPKIN_PROFILE_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    return cache_root() / "profiles"


def profile_key(kind: str, mechanism_sha256: str, params: dict[str, Any],
                options: dict[str, Any]) -> str:
    """sha256 of what determines a profile: its kind, the mechanism, the case, the solver options,
    Cantera's version and :data:`PROFILE_VERSION`."""
    identity = {"kind": kind, "mechanism_sha256": mechanism_sha256, "params": params,
                "options": options, "cantera": ct.__version__, "version": PROFILE_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cached_profiles(key: str, solve: Callable[[], list[Profile]],
                    folder: Path | None = None) -> list[Profile]:
    """The profiles stored under ``key`` in ``folder`` (default :func:`profile_cache_dir`), else
    ``solve()``'s, stored for the next run. Exceptions of ``solve`` propagate (nothing is kept)."""
    folder = folder if folder is not None else profile_cache_dir()
    if folder is None:
        return solve()
    path = folder / f"{key}.npz"
    if path.is_file():
        try:
            return _read(path)
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable: solved again and replaced below
    profiles = solve()
    try:
        _write(path, profiles)
    except OSError:
        pass  # a full or read-only cache costs the next run time, never this run's rows
    return profiles


def _write(path: Path, profiles: list[Profile]) -> None:
    arrays: dict[str, np.ndarray] = {"strain": np.array([p[0] for p in profiles], dtype=np.float64)}
    for i, (_, coordinate, states, activity) in enumerate(profiles):
        arrays[f"coordinate_{i}"] = np.asarray(coordinate, dtype=np.float64)
        arrays[f"states_{i}"] = np.asarray(states, dtype=np.float64)
        arrays[f"activity_{i}"] = np.asarray(activity, dtype=np.float64)
    atomic_write_npz(path, **arrays)


def _read(path: Path) -> list[Profile]:
    with np.load(path, allow_pickle=False) as data:
        strains = data["strain"]
        profiles = [(float(a), data[f"coordinate_{i}"], data[f"states_{i}"], data[f"activity_{i}"])
                    for i, a in enumerate(strains)]
    for _, coordinate, states, activity in profiles:
        if not (len(coordinate) == len(states) == len(activity) and np.all(np.isfinite(states))):
            raise ValueError(f"{path}: inconsistent profile")
    return profiles
