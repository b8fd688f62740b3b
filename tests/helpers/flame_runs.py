"""A-posteriori flame runs in OpenFOAM, deepkin chemistry against OpenFOAM's ODE chemistry on
the same case: 1D premixed flames (speed) and the 2D counterflow diffusion flame (peak
temperature and its position). Shared by ``tests/test_openfoam_flames.py`` and
``benchmarks/openfoam_flames.py`` (which also draws the figures of docs/openfoam.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from couplers.openfoam.counterflow import CounterflowFlame, counterflow_history
from couplers.openfoam.results import case_info, flame_positions, flame_speed, step_counts
from tests.helpers.openfoam import run_solver, write_case

COUNTERFLOW_FUEL = "H2:0.5,N2:0.5"
COUNTERFLOW_STEPS_PER_CALL = 20  # deltaT = 20 us: Courant number about 0.15 at 1 m/s inlets


@dataclass
class PremixedRun:
    """One premixed flame of one chemistry: speed (m/s), the front's positions, served shares."""

    chemistry: str
    phi: float
    speed_m_s: float
    times_s: list[float]
    positions_m: list[float]
    network_fraction: float | None = None  # cell-steps served by a network (deepkin only)
    reacting_network_fraction: float | None = None  # the same among the non-frozen cells
    cantera_speed_m_s: float | None = None
    cantera_unity_lewis_speed_m_s: float | None = None


@dataclass
class CounterflowRun:
    chemistry: str
    history: list[CounterflowFlame] = field(default_factory=list)
    network_fraction: float | None = None
    reacting_network_fraction: float | None = None

    @property
    def final(self) -> CounterflowFlame:
        return self.history[-1]


def premixed_run(folder: Path, url: str, model: str, chemistry: str, phi: float,
                 end_time_s: float, *options: str) -> PremixedRun:
    """Write and run ``deepkin openfoam case flame1d`` (1 atm, 300 K) with ``chemistry``."""
    case = write_case("flame1d", folder, "--model", model, "--url", url, "--chemistry", chemistry,
                      "--phi", f"{phi:g}", "--end-time", f"{end_time_s:g}", *options)
    run_solver("reactingFoam", case, timeout_s=3600)
    speed = flame_speed(case)
    times, positions = flame_positions(case)
    info = case_info(case)
    run = PremixedRun(chemistry, phi, speed.speed_m_s, times.tolist(), positions.tolist(),
                      cantera_speed_m_s=info["cantera_flame_speed_m_s"],
                      cantera_unity_lewis_speed_m_s=info["cantera_unity_lewis_flame_speed_m_s"])
    if chemistry == "deepkin":
        counts = step_counts(case / "log.reactingFoam")
        run.network_fraction = counts.network_fraction
        run.reacting_network_fraction = counts.reacting_network_fraction
    return run


def counterflow_run(folder: Path, url: str, model: str, chemistry: str, end_time_s: float,
                    *options: str, fuel: str = COUNTERFLOW_FUEL,
                    steps_per_call: int = COUNTERFLOW_STEPS_PER_CALL) -> CounterflowRun:
    """Write and run ``deepkin openfoam case counterflow`` (``fuel``, H2/N2 50/50 by default,
    against air, 1 atm, 300 K, inlets at 1 m/s) with ``chemistry``; ``steps_per_call`` model
    steps per CFD step."""
    case = write_case("counterflow", folder, "--model", model, "--url", url, "--chemistry",
                      chemistry, "--fuel", fuel, "--steps-per-call", str(steps_per_call),
                      "--end-time", f"{end_time_s:g}", *options)
    run_solver("reactingFoam", case, timeout_s=7200)
    run = CounterflowRun(chemistry, counterflow_history(case))
    if chemistry == "deepkin":
        counts = step_counts(case / "log.reactingFoam")
        run.network_fraction = counts.network_fraction
        run.reacting_network_fraction = counts.reacting_network_fraction
    return run


def with_frozen_temperature(src: Path, dst: Path, frozen_k: float, name: str) -> Path:
    """A copy of model ``src`` whose frozen temperature is ``frozen_k`` (K), served as ``name``."""
    from kinetics.model_file import network_state, read_model_file, save_model
    from kinetics.models import build_model

    meta, tensors, yaml_text = read_model_file(src)
    network = build_model(meta.architecture)
    network.load_state_dict(network_state(tensors))
    extra = {k: v for k, v in tensors.items() if not k.startswith("net.")}
    save_model(dst, network, dataclasses.replace(meta, frozen_temperature_k=frozen_k, name=name),
               extra, yaml_text)
    return dst
