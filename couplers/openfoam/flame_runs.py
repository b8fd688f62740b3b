"""A-posteriori flame runs in OpenFOAM: write a case of :mod:`couplers.openfoam.cases`, run
reactingFoam on it and read back what the run gives, for deepkin chemistry or OpenFOAM's own ODE
chemistry on the same case.

- :func:`premixed_run`: a 1D freely propagating premixed flame (speed from the front's drift,
  peak and burnt-gas temperature, heat release by temperature band);
- :func:`counterflow_run`: the 2D counterflow diffusion flame (peak temperature on the centre
  line and its position at every written time, heat release by temperature band);
- :func:`cached_run`: run once, keep the result as ``result.json`` in the case folder.

A run of OpenFOAM's ODE chemistry (a reference: 20-65 min per GRI-3.0 flame) can be resumed
(``resume=True``): a case folder that a stopped run of the same case left goes on from its last
complete written time instead of from the start.

Used by ``deepkin refine`` (``refinement/``), ``tests/test_openfoam_flames.py`` (through
``tests/helpers/flame_runs.py``) and ``benchmarks/openfoam_flames.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from couplers.openfoam.cases import CASE_INFO, CaseSpec, spec_from_options, write_case
from couplers.openfoam.counterflow import CounterflowFlame, counterflow_history
from couplers.openfoam.export import DEEPKIN_CHEMISTRIES
from couplers.openfoam.foam import read_internal_field, run_application, time_directories
from couplers.openfoam.results import case_info, flame_positions, flame_speed, step_counts
from mechanisms.atomic_io import atomic_write_text

COUNTERFLOW_FUEL = "H2:0.5,N2:0.5"
COUNTERFLOW_STEPS_PER_CALL = 20  # deltaT = 20 us: Courant number about 0.15 at 1 m/s inlets
HEAT_RELEASE_BAND_K = 300.0  # width of the temperature bands of the heat release (K)
RESULT_FILE = "result.json"

Run = TypeVar("Run")


@dataclass
class PremixedRun:
    """One premixed flame of one chemistry: speed (m/s), the front's positions (m) at the
    written times (s), served shares, and the final fields' peak and burnt-gas (outlet)
    temperatures (K); ``heat_release_w`` maps a band's lower edge (K, as text) to the heat
    release of the cells in that band (W, Σ Qdot·V, mean over the written times the speed is
    fitted on)."""

    chemistry: str
    phi: float
    speed_m_s: float
    times_s: list[float]
    positions_m: list[float]
    network_fraction: float | None = None  # cell-steps served by a network (deepkin only)
    reacting_network_fraction: float | None = None  # the same among the non-frozen cells
    cantera_speed_m_s: float | None = None
    cantera_unity_lewis_speed_m_s: float | None = None
    peak_temperature_k: float | None = None
    burnt_temperature_k: float | None = None
    heat_release_w: dict[str, float] | None = None


@dataclass
class CounterflowRun:
    """One counterflow flame of one chemistry: the centre line's peak at every written time,
    served shares and the heat release by band (as :class:`PremixedRun`, over the second half
    of the run)."""

    chemistry: str
    history: list[CounterflowFlame] = field(default_factory=list)
    network_fraction: float | None = None
    reacting_network_fraction: float | None = None
    heat_release_w: dict[str, float] | None = None

    @property
    def final(self) -> CounterflowFlame:
        return self.history[-1]

    @classmethod
    def from_dict(cls, data: dict) -> CounterflowRun:
        """The run as :func:`dataclasses.asdict` wrote it."""
        return cls(data["chemistry"], [CounterflowFlame(**h) for h in data["history"]],
                   data.get("network_fraction"), data.get("reacting_network_fraction"),
                   data.get("heat_release_w"))


def premixed_run(folder: Path, url: str, model: str, chemistry: str, phi: float,
                 end_time_s: float, *, temperature_k: float = 300.0, pressure_atm: float = 1.0,
                 cells: int = 400, steps_per_call: int = 1, fuel: str | None = None,
                 oxidizer: str | None = None, token: str | None = None,
                 timeout_s: float = 3600.0, band_k: float = HEAT_RELEASE_BAND_K,
                 resume: bool = False) -> PremixedRun:
    """Write ``deepkin openfoam case flame1d`` into ``folder`` (unburnt ``temperature_k`` K,
    ``pressure_atm`` atm, ``phi``; fuel and oxidiser default to the model's dataset's) with
    ``chemistry`` (``deepkin``: served at ``url`` with bearer ``token``; ``ode``: OpenFOAM's own),
    run reactingFoam for ``end_time_s`` s and read the run. ``resume`` (``ode`` only): go on
    from a stopped run of the same case in ``folder`` (:func:`prepare_case`)."""
    spec = spec_from_options("flame1d", model, temperature_k, pressure_atm, phi, fuel, oxidizer,
                             chemistry=chemistry, url=url, end_time_s=end_time_s, cells=cells,
                             steps_per_call=steps_per_call)
    case = Path(folder)
    prepare_case(spec, case, resume)
    _run_solver(case, token, timeout_s)
    speed = flame_speed(case)
    times, positions = flame_positions(case)
    info = case_info(case)
    final = time_directories(case)[-1][1]
    temps = read_internal_field(final / "T")
    run = PremixedRun(chemistry, phi, speed.speed_m_s, times.tolist(), positions.tolist(),
                      cantera_speed_m_s=info["cantera_flame_speed_m_s"],
                      cantera_unity_lewis_speed_m_s=info["cantera_unity_lewis_flame_speed_m_s"],
                      peak_temperature_k=float(temps.max()), burnt_temperature_k=float(temps[-1]),
                      heat_release_w=heat_release_by_band(case, info["dx_m"] ** 3,
                                                          speed.window_s[0], band_k))
    if chemistry in DEEPKIN_CHEMISTRIES:
        counts = step_counts(case / "log.reactingFoam")
        run.network_fraction = counts.network_fraction
        run.reacting_network_fraction = counts.reacting_network_fraction
    return run


def counterflow_run(folder: Path, url: str, model: str, chemistry: str, end_time_s: float,
                    *, fuel: str = COUNTERFLOW_FUEL, oxidizer: str | None = None,
                    steps_per_call: int = COUNTERFLOW_STEPS_PER_CALL, temperature_k: float = 300.0,
                    pressure_atm: float = 1.0, velocity_m_s: float = 1.0, cells: int = 100,
                    cells_y: int = 40, token: str | None = None, timeout_s: float = 7200.0,
                    band_k: float = HEAT_RELEASE_BAND_K, resume: bool = False) -> CounterflowRun:
    """Write ``deepkin openfoam case counterflow`` (``fuel``, H2/N2 50/50 by default, against
    ``oxidizer``, default the model's, at ``temperature_k`` K and ``pressure_atm`` atm, inlets at
    ``velocity_m_s`` m/s) with ``chemistry`` (as :func:`premixed_run`'s), ``steps_per_call``
    model steps per CFD step, and run reactingFoam on it for ``end_time_s`` s; ``resume`` as
    :func:`premixed_run`'s."""
    spec = spec_from_options("counterflow", model, temperature_k, pressure_atm, 1.0, fuel, oxidizer,
                             chemistry=chemistry, url=url, end_time_s=end_time_s, cells=cells,
                             cells_y=cells_y, velocity_m_s=velocity_m_s,
                             steps_per_call=steps_per_call)
    case = Path(folder)
    prepare_case(spec, case, resume)
    _run_solver(case, token, timeout_s)
    info = case_info(case)
    run = CounterflowRun(chemistry, counterflow_history(case))
    volume = info["dx_m"] * info["dy_m"] * info["height_m"]  # the mesh is 20 mm deep (z)
    run.heat_release_w = heat_release_by_band(case, volume, 0.5 * run.final.time_s, band_k)
    if chemistry in DEEPKIN_CHEMISTRIES:
        counts = step_counts(case / "log.reactingFoam")
        run.network_fraction = counts.network_fraction
        run.reacting_network_fraction = counts.reacting_network_fraction
    return run


def prepare_case(spec: CaseSpec, case: Path, resume: bool = False) -> bool:
    """Write ``spec`` into ``case``, or, with ``resume`` and OpenFOAM's own ODE chemistry, make
    a stopped run of the same case there go on: its last written time (which the stop may have
    cut half way) is removed, ``startFrom latestTime`` set, and the earlier log kept as
    ``log.reactingFoam.<n>``. True when it resumes. With ``resume``, a case folder of another
    case (or one that wrote too little to go on from) is emptied and the case written afresh;
    otherwise ``case`` must be empty or absent (InputError, as ``write_case``)."""
    case = Path(case)
    written = _stopped_run_of(spec, case) if resume and spec.chemistry == "ode" else []
    if written:
        shutil.rmtree(written[-1][1])
        control = case / "system" / "controlDict"
        control.write_text(re.sub(r"(?m)^startFrom\s+\w+;", "startFrom       latestTime;",
                                  control.read_text()))
        log = case / "log.reactingFoam"
        if log.is_file():
            n = 1
            while log.with_name(f"{log.name}.{n}").exists():
                n += 1
            log.rename(log.with_name(f"{log.name}.{n}"))
        return True
    if resume and (case / CASE_INFO).is_file():
        shutil.rmtree(case)  # a stopped run of another case, or too short to go on from
    write_case(spec, case)
    return False


def _stopped_run_of(spec: CaseSpec, case: Path) -> list[tuple[float, Path]]:
    """The times after 0 (s, folder) that a run of ``spec`` in ``case`` wrote (the same case; the
    model may be another file of the same mechanism), when at least two; else []."""
    try:
        recorded = json.loads((case / CASE_INFO).read_text())["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    defaults = {f.name: f.default for f in dataclasses.fields(CaseSpec)}
    current = dataclasses.asdict(spec)
    if any(recorded.get(k, defaults.get(k)) != v for k, v in current.items()
           if k not in ("model", "url")):
        return []
    if recorded.get("model") != current["model"]:
        from couplers.openfoam.export import load_model
        from mechanisms.errors import InputError

        try:
            if load_model(recorded["model"])[1].mechanism_sha256 != \
                    load_model(current["model"])[1].mechanism_sha256:
                return []
        except (InputError, OSError, KeyError):
            return []
    written = [t for t in time_directories(case) if t[0] > 0]
    return written if len(written) >= 2 else []


def _run_solver(case: Path, token: str | None, timeout_s: float) -> None:
    """reactingFoam on ``case`` (its log in ``case/log.reactingFoam``), the service's bearer
    token in its environment."""
    env = {"DEEPKIN_TOKEN": token} if token else None
    run_application("reactingFoam", case, log=case / "log.reactingFoam", env=env,
                    timeout_s=timeout_s)


def heat_release_by_band(case: Path, cell_volume_m3: float, from_time_s: float,
                         band_k: float = HEAT_RELEASE_BAND_K) -> dict[str, float]:
    """The heat release (W: Σ Qdot × ``cell_volume_m3`` over the cells whose T lies in a band
    ``band_k`` K wide) of each temperature band, averaged over the written times from
    ``from_time_s`` (s) on; keys are the bands' lower edges (K) as text. Empty when the run wrote
    no ``Qdot`` field (reactingFoam writes one at every written time)."""
    sums: dict[float, float] = {}
    used = 0
    for t, folder in time_directories(case):
        if t <= 0 or t < from_time_s or not (folder / "Qdot").is_file():
            continue
        temps = read_internal_field(folder / "T")
        qdot = np.broadcast_to(read_internal_field(folder / "Qdot"), temps.shape)
        edges = band_k * np.floor(temps / band_k)
        for lo in np.unique(edges):
            sums[float(lo)] = sums.get(float(lo), 0.0) + float(qdot[edges == lo].sum()) * cell_volume_m3
        used += 1
    return {f"{lo:g}": total / used for lo, total in sorted(sums.items())} if used else {}


def cached_run(folder: Path, run: Callable[[], Run], load: Callable[[dict], Run],
               keep_stopped: bool = False) -> Run:
    """``run()`` once: its result (a dataclass) is kept as ``folder``/result.json, written
    atomically, and later calls ``load`` it from there. A folder without that file (a run that
    was stopped) is removed before running again, unless ``keep_stopped`` (``run`` resumes it)."""
    folder = Path(folder)
    saved = folder / RESULT_FILE
    if saved.is_file():
        return load(json.loads(saved.read_text()))
    if folder.exists() and not keep_stopped:
        shutil.rmtree(folder)
    result = run()
    atomic_write_text(saved, json.dumps(dataclasses.asdict(result)))
    return result
