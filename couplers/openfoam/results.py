"""Figures from finished OpenFOAM runs of the cases in :mod:`couplers.openfoam.cases`: ignition
delays (chemFoam), flame positions and speeds (the 1D flame), and the deepkin solver's per-step
counts from a solver log."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from couplers.openfoam.cases import CASE_INFO
from couplers.openfoam.foam import read_internal_field, time_directories
from mechanisms.errors import InputError
from mechanisms.ignition import IGNITION_RISE_K, crossing_time

STEP_LINE = re.compile(r"^deepkin: cells (\d+), frozen (\d+), fallback (\d+), substeps (\d+), "
                       r"chemistry ([0-9.eE+-]+) s", flags=re.M)


def case_info(case: Path) -> dict:
    """The ``deepkin-case.json`` of a case written by :func:`couplers.openfoam.cases.write_case`."""
    path = Path(case) / CASE_INFO
    if not path.is_file():
        raise InputError(f"case: {case} has no {CASE_INFO} (not written by deepkin openfoam case)")
    return json.loads(path.read_text())


def chemfoam_history(case: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(t [s], T [K])`` ``[m]`` from chemFoam's ``chemFoam.out``, with the initial state first."""
    out = Path(case) / "chemFoam.out"
    if not out.is_file():
        raise InputError(f"case: {case} has no chemFoam.out (has chemFoam run?)")
    data = np.loadtxt(out, comments="#", ndmin=2)
    t0 = case_info(case)["spec"]["temperature_k"]
    return np.concatenate([[0.0], data[:, 0]]), np.concatenate([[t0], data[:, 1]])


def ignition_delay(case: Path) -> float | None:
    """chemFoam's ignition delay (s): T first reaching T0 + 400 K, interpolated in the step."""
    times, temps = chemfoam_history(case)
    return crossing_time(times, temps, temps[0] + IGNITION_RISE_K)


def flame_position(x: np.ndarray, temps: np.ndarray, level: float) -> float:
    """Where ``temps`` ``[n]`` (K) along ``x`` ``[n]`` (m) first rises through ``level`` (K)."""
    above = np.nonzero(temps >= level)[0]
    if len(above) == 0 or above[0] == 0:
        raise InputError("flame: the temperature profile does not cross the flame's mid temperature")
    i = int(above[0])
    return float(x[i - 1] + (level - temps[i - 1]) * (x[i] - x[i - 1]) / (temps[i] - temps[i - 1]))


def cell_centres(info: dict) -> np.ndarray:
    """Cell centres ``[n]`` (m) of the 1D flame's uniform mesh."""
    return (np.arange(info["cells"]) + 0.5) * info["dx_m"]


def flame_positions(case: Path, processor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(t [s], x_f [m])`` of the flame at every written time after 0 (reconstructed fields)."""
    info = case_info(case)
    x = cell_centres(info)
    level = 0.5 * (info["spec"]["temperature_k"] + info["burnt_temperature_k"])
    times, positions = [], []
    for t, folder in time_directories(case, processor):
        if t > 0 and (folder / "T").is_file():
            times.append(t)
            positions.append(flame_position(x, read_internal_field(folder / "T"), level))
    return np.array(times), np.array(positions)


@dataclass
class FlameSpeed:
    """Burning velocity relative to the unburnt gas (m/s), from the flame's drift."""

    speed_m_s: float
    drift_m_s: float  # dx_f/dt of the front in the lab frame
    samples: int
    window_s: tuple[float, float]


def flame_speed(case: Path, settle_fraction: float = 0.5) -> FlameSpeed:
    """S = U_inlet − dx_f/dt, dx_f/dt a least-squares line over the written times after the first
    ``settle_fraction`` of the run (the initial Cantera profile relaxes to OpenFOAM's flame first)."""
    info = case_info(case)
    times, positions = flame_positions(case)
    keep = times >= settle_fraction * times.max()
    if keep.sum() < 3:
        raise InputError(f"case: {case} has {keep.sum()} written times after the settling time; "
                         "run longer or write more often")
    drift = float(np.polyfit(times[keep], positions[keep], 1)[0])
    return FlameSpeed(info["inlet_velocity_m_s"] - drift, drift, int(keep.sum()),
                      (float(times[keep].min()), float(times[keep].max())))


@dataclass
class StepCounts:
    """The deepkin solver's per-step lines of a log, summed: cells, frozen and fallback cells,
    chemistry wall time (s, the slowest rank's per step)."""

    steps: int
    cells: int
    frozen: int
    fallback: int
    chemistry_s: list[float]

    @property
    def network_fraction(self) -> float:
        """Fraction of cell-steps the network served (neither frozen nor fallen back to Cantera)."""
        return (self.cells - self.frozen - self.fallback) / self.cells if self.cells else 0.0

    @property
    def reacting_network_fraction(self) -> float:
        """The same fraction among the cells that were not frozen."""
        active = self.cells - self.frozen
        return (active - self.fallback) / active if active else 0.0


def step_counts(log: Path) -> StepCounts:
    """Parse the ``deepkin: cells …`` lines of a solver log."""
    matches = STEP_LINE.findall(Path(log).read_text(errors="replace"))
    return StepCounts(len(matches), sum(int(m[0]) for m in matches), sum(int(m[1]) for m in matches),
                      sum(int(m[2]) for m in matches), [float(m[4]) for m in matches])
