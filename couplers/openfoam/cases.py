"""Ready-to-run OpenFOAM cases on a model's mechanism: chemFoam (0D, constant pressure), a 1D
freely propagating premixed flame and a 2D counterflow diffusion flame (reactingFoam,
``couplers/openfoam/counterflow.py``), all with a fixed deltaT = k × the model's dt.

Each case is written whole, then :func:`couplers.openfoam.export.export_case` writes its
mechanism, thermo and chemistry files; the flame's mesh is made (blockMesh) so that the solver can
run at once. ``deepkin-case.json`` in the case records what was asked for and Cantera's reference
values (ignition delay, or flame speed and thickness), which :mod:`couplers.openfoam.results` and
the tests read back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cantera as ct
import numpy as np

from couplers.openfoam.export import DEFAULT_URL, ExportResult, export_case, load_model
from couplers.openfoam.foam import run_application, scalar_list, vector_list, write_foam_file
from couplers.openfoam.reacting_files import ReactingSolverSettings, write_reacting_files
from mechanisms.composition import mixture_mass_fractions
from mechanisms.errors import InputError
from mechanisms.ignition import IGNITION_RISE_K, crossing_time
from mechanisms.loading import solution_from_yaml
from mechanisms.state import ONE_ATM_PA

CASE_INFO = "deepkin-case.json"
KINDS = ("chemfoam", "flame1d", "counterflow")


@dataclass
class CaseSpec:
    """What a case is: the mixture, its state and the run's length. SI units."""

    kind: str
    model: str
    temperature_k: float
    pressure_pa: float
    phi: float
    fuel: str
    oxidizer: str
    chemistry: str = "deepkin"  # or deepkin-inprocess (the model file in the case), ode
    url: str = DEFAULT_URL  # deepkin: the service
    end_time_s: float | None = None  # default: from Cantera's reference
    steps_per_call: int = 1  # deltaT = steps_per_call × the model's dt
    cells: int = 400  # flame1d; counterflow: cells between the inlets (x)
    length_m: float | None = None  # flame1d; default 30 thermal thicknesses
    cells_y: int = 40  # counterflow: cells across (y)
    velocity_m_s: float = 1.0  # counterflow: speed of each inlet jet (m/s)
    write_interval_s: float | None = None
    ranks: int = 2  # decomposeParDict's numberOfSubdomains (flame1d)
    threads: int | None = None  # deepkin-inprocess: libtorch threads per rank (None: the default)


def _check(spec: CaseSpec) -> None:
    if spec.kind not in KINDS:
        raise InputError(f"case: '{spec.kind}' is not one of {', '.join(KINDS)}")
    for name, value in (("T0", spec.temperature_k), ("pressure", spec.pressure_pa), ("phi", spec.phi)):
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{name}: must be > 0, got {value}")
    if spec.end_time_s is not None and not (math.isfinite(spec.end_time_s) and spec.end_time_s > 0):
        raise InputError(f"end-time: must be > 0 s, got {spec.end_time_s}")
    if spec.steps_per_call < 1:
        raise InputError(f"steps-per-call: must be >= 1, got {spec.steps_per_call}")
    if spec.cells < 10:
        raise InputError(f"cells: a flame needs >= 10 cells, got {spec.cells}")
    if spec.cells_y < 2:
        raise InputError(f"cells-y: a counterflow needs >= 2 cells across, got {spec.cells_y}")
    if not (math.isfinite(spec.velocity_m_s) and spec.velocity_m_s > 0):
        raise InputError(f"velocity: must be > 0 m/s, got {spec.velocity_m_s}")
    if spec.ranks < 1:
        raise InputError(f"ranks: must be >= 1, got {spec.ranks}")
    if spec.length_m is not None and not (math.isfinite(spec.length_m) and spec.length_m > 0):
        raise InputError(f"length: must be > 0 m, got {spec.length_m}")


def write_case(spec: CaseSpec, out_dir: str | Path, library: Path | None = None) -> ExportResult:
    """Write the case ``spec`` into ``out_dir`` (created; an existing non-empty folder is refused)."""
    _check(spec)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"output: {out} exists and is not empty")
    name, meta, yaml_text = load_model(spec.model)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    y0 = mixture_mass_fractions(gas, spec.fuel, spec.oxidizer, spec.phi)
    dt = meta.dt_s * spec.steps_per_call
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind == "chemfoam":
        info = _write_chemfoam(spec, out, gas, y0, dt)
    elif spec.kind == "flame1d":
        info = _write_flame1d(spec, out, gas, y0, dt)
    else:
        from couplers.openfoam.counterflow import write_counterflow

        info = write_counterflow(out, gas, spec.pressure_pa, _stream(gas, spec.fuel, "fuel"),
                                 _stream(gas, spec.oxidizer, "oxidizer"), spec.temperature_k,
                                 spec.velocity_m_s, spec.cells, spec.cells_y, dt, spec.end_time_s,
                                 spec.write_interval_s)
    result = export_case(spec.model, out, spec.chemistry, url=spec.url, model_name=name, library=library,
                         threads=spec.threads)
    info.update({"spec": asdict(spec), "model_name": name, "dt_s": dt, "model_dt_s": meta.dt_s,
                 "species": list(gas.species_names), "y0": [float(v) for v in y0]})
    (out / CASE_INFO).write_text(json.dumps(info, indent=1) + "\n")
    if spec.kind in ("flame1d", "counterflow"):
        run_application("blockMesh", out)
    return result


def _stream(gas: ct.Solution, composition: str, field: str) -> np.ndarray:
    """Mass fractions ``[ns]`` of a mole-basis composition string (a counterflow's inlet)."""
    from mechanisms.composition import parse_composition

    gas.TPX = 300.0, ONE_ATM_PA, parse_composition(composition, gas.species_names, field)
    return gas.Y.copy()


# ---------------------------------------------------------------------------------------- chemFoam

def cantera_ignition_delay(gas: ct.Solution, temperature_k: float, pressure_pa: float, y0: np.ndarray,
                           t_max_s: float = 1.0) -> float | None:
    """Ignition delay (s; T0 + 400 K) of an adiabatic constant-pressure reactor, tight tolerances."""
    gas.TPY = temperature_k, pressure_pa, y0
    reactor = ct.IdealGasConstPressureReactor(gas, clone=True)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = 1e-10, 1e-20
    times, temps = [0.0], [temperature_k]
    while net.time < t_max_s and temps[-1] < temperature_k + IGNITION_RISE_K + 1.0:
        net.step()
        times.append(net.time)
        temps.append(reactor.T)
    return crossing_time(np.array(times), np.array(temps), temperature_k + IGNITION_RISE_K)


def _write_chemfoam(spec: CaseSpec, out: Path, gas: ct.Solution, y0: np.ndarray, dt: float) -> dict:
    idt = cantera_ignition_delay(gas, spec.temperature_k, spec.pressure_pa, y0)
    if spec.end_time_s is None and idt is None:
        raise InputError(f"T0/pressure/phi: this mixture does not ignite within 1 s at "
                         f"{spec.temperature_k:g} K; pass --end-time")
    end = spec.end_time_s or min(max(3.0 * idt, 50e-6), 0.05)
    steps = max(1, round(end / dt))
    fractions = "\n".join(f"    {name:<15} {y:.17g};" for name, y in zip(gas.species_names, y0) if y > 0)
    write_foam_file(out / "constant" / "initialConditions", f"""constantProperty pressure;

fractionBasis   mass;

fractions
{{
{fractions}
}}

p               {spec.pressure_pa:.17g};

T               {spec.temperature_k:.17g};
""")
    write_foam_file(out / "system" / "controlDict", f"""application     chemFoam;

startFrom       startTime;

startTime       0;

stopAt          endTime;

endTime         {steps * dt:.17g};

deltaT          {dt:.17g};

maxDeltaT       1;

adjustTimeStep  off;

writeControl    timeStep;

writeInterval   {steps};

purgeWrite      0;

writeFormat     ascii;

writePrecision  12;

writeCompression off;

timeFormat      general;

timePrecision   12;

runTimeModifiable no;
""")
    write_foam_file(out / "system" / "fvSchemes", """ddtSchemes
{
    default         Euler;
}

gradSchemes
{
}

divSchemes
{
}

laplacianSchemes
{
}
""")
    write_foam_file(out / "system" / "fvSolution", """solvers
{
    Yi
    {
        solver          PBiCGStab;
        preconditioner  DILU;
        tolerance       1e-12;
        relTol          0;
    }
}
""")
    return {"cantera_ignition_delay_s": idt, "end_time_s": steps * dt}


# ------------------------------------------------------------------------------------ 1D flame

def cantera_free_flame(gas: ct.Solution, temperature_k: float, pressure_pa: float, y0: np.ndarray,
                       transport: str = "mixture-averaged", width_m: float = 0.02) -> ct.FreeFlame:
    """Cantera's freely propagating flame of the mixture (``transport``: Cantera's model name)."""
    gas.transport_model = transport
    gas.TPY = temperature_k, pressure_pa, y0
    flame = ct.FreeFlame(gas, width=width_m)
    flame.set_refine_criteria(ratio=3.0, slope=0.06, curve=0.12)
    flame.solve(loglevel=0, auto=True)
    return flame


def _thermal_thickness(flame: ct.FreeFlame) -> float:
    gradient = np.gradient(flame.T, flame.grid)
    return float((flame.T[-1] - flame.T[0]) / gradient.max())


def _write_flame1d(spec: CaseSpec, out: Path, gas: ct.Solution, y0: np.ndarray, dt: float) -> dict:
    transport = gas.transport_model
    flame = cantera_free_flame(gas, spec.temperature_k, spec.pressure_pa, y0)
    speed = float(flame.velocity[0])
    thickness = _thermal_thickness(flame)
    if not (speed > 0 and flame.T.max() > spec.temperature_k + IGNITION_RISE_K):
        raise InputError(f"T0/pressure/phi: no premixed flame at {spec.temperature_k:g} K, phi {spec.phi:g}")
    try:
        unity = cantera_free_flame(gas, spec.temperature_k, spec.pressure_pa, y0,
                                   transport="unity-Lewis-number")
        speed_unity = float(unity.velocity[0])
    except ct.CanteraError:
        speed_unity = None
    gas.transport_model = transport
    length = spec.length_m or 30.0 * thickness
    n = spec.cells
    dx = length / n
    x = (np.arange(n) + 0.5) * dx
    # The flame (where T is halfway up) at 30 % of the domain; inlet at the unburnt speed
    t_mid = 0.5 * (flame.T[0] + flame.T[-1])
    z_mid = float(np.interp(t_mid, flame.T, flame.grid))
    z = x - 0.3 * length + z_mid
    temps = np.interp(z, flame.grid, flame.T)
    ys = np.array([np.interp(z, flame.grid, flame.Y[k]) for k in range(gas.n_species)])
    ys = np.clip(ys, 0.0, None)
    ys /= ys.sum(axis=0)
    u = np.interp(z, flame.grid, flame.velocity)
    end = spec.end_time_s or 1e-3
    steps = max(1, round(end / dt))
    write_every = min(steps, max(1, round((spec.write_interval_s or 5e-5) / dt)))
    _flame_mesh(out, length, dx, n)
    gas.TPY = flame.T[-1], spec.pressure_pa, flame.Y[:, -1]
    _flame_fields(out, spec, gas, y0, temps, ys, u, speed, gas.cp / gas.cv, length)
    write_reacting_files(out, dt, steps, write_every,
                         ReactingSolverSettings(subdomains=(spec.ranks, 1, 1)))
    return {"cantera_flame_speed_m_s": speed, "cantera_unity_lewis_flame_speed_m_s": speed_unity,
            "cantera_thermal_thickness_m": thickness, "inlet_velocity_m_s": speed,
            "length_m": length, "cells": n, "dx_m": dx, "end_time_s": steps * dt,
            "write_interval_s": write_every * dt, "unburnt_density_kg_m3": float(flame.density[0]),
            "burnt_temperature_k": float(flame.T[-1])}


def _flame_mesh(out: Path, length: float, dx: float, n: int) -> None:
    write_foam_file(out / "system" / "blockMeshDict", f"""convertToMeters 1;

vertices
(
    (0 0 0)
    ({length:.17g} 0 0)
    ({length:.17g} {dx:.17g} 0)
    (0 {dx:.17g} 0)
    (0 0 {dx:.17g})
    ({length:.17g} 0 {dx:.17g})
    ({length:.17g} {dx:.17g} {dx:.17g})
    (0 {dx:.17g} {dx:.17g})
);

blocks
(
    hex (0 1 2 3 4 5 6 7) ({n} 1 1) simpleGrading (1 1 1)
);

edges
(
);

boundary
(
    inlet
    {{
        type patch;
        faces ((0 4 7 3));
    }}
    outlet
    {{
        type patch;
        faces ((1 2 6 5));
    }}
    sides
    {{
        type empty;
        faces ((0 1 5 4) (3 7 6 2) (0 3 2 1) (4 5 6 7));
    }}
);

mergePatchPairs
(
);
""")


def _field(out: Path, name: str, cls: str, dimensions: str, internal: str, inlet: str, outlet: str) -> None:
    write_foam_file(out / "0" / name, f"""dimensions      {dimensions};

internalField   {internal};

boundaryField
{{
    inlet
    {{
{inlet}
    }}
    outlet
    {{
{outlet}
    }}
    sides
    {{
        type            empty;
    }}
}}
""", cls=cls)


def _flame_fields(out: Path, spec: CaseSpec, gas: ct.Solution, y0: np.ndarray, temps: np.ndarray,
                  ys: np.ndarray, u: np.ndarray, inlet_speed: float, burnt_gamma: float,
                  length_m: float) -> None:
    zero_gradient = "        type            zeroGradient;"

    def fixed(value: str) -> str:
        return f"        type            fixedValue;\n        value           {value};"

    _field(out, "T", "volScalarField", "[0 0 0 1 0 0 0]", scalar_list(temps),
           fixed(f"uniform {spec.temperature_k:.17g}"), zero_gradient)
    # A non-reflecting outlet: with a fixed pressure there, the flame drives the domain's
    # acoustics (±10 % pressure swings within 1 ms were seen); with it, the pressure stays within ±20 Pa
    transmissive = (f"        type            waveTransmissive;\n        field           p;\n"
                    f"        psi             thermo:psi;\n        gamma           {burnt_gamma:.6g};\n"
                    f"        fieldInf        {spec.pressure_pa:.17g};\n"
                    f"        lInf            {length_m:.6g};\n"
                    f"        value           uniform {spec.pressure_pa:.17g};")
    _field(out, "p", "volScalarField", "[1 -1 -2 0 0 0 0]", f"uniform {spec.pressure_pa:.17g}",
           zero_gradient, transmissive)
    velocity = np.zeros((len(u), 3))
    velocity[:, 0] = u
    _field(out, "U", "volVectorField", "[0 1 -1 0 0 0 0]", vector_list(velocity),
           fixed(f"uniform ({inlet_speed:.17g} 0 0)"), zero_gradient)
    for k, name in enumerate(gas.species_names):
        _field(out, name, "volScalarField", "[0 0 0 0 0 0 0]", scalar_list(ys[k]),
               fixed(f"uniform {y0[k]:.17g}"), zero_gradient)
    _field(out, "Ydefault", "volScalarField", "[0 0 0 0 0 0 0]", "uniform 0", fixed("uniform 0"),
           zero_gradient)


def spec_from_options(kind: str, model: str, temperature_k: float | None, pressure_atm: float,
                      phi: float, fuel: str | None, oxidizer: str | None, **extra) -> CaseSpec:
    """A :class:`CaseSpec` from CLI-style options (pressure in atm; fuel/oxidiser default to the
    model's dataset's, T0 to 1200 K for chemFoam and 300 K for the flames)."""
    _, meta, _ = load_model(model)
    fuel = fuel or meta.training.get("fuel")
    oxidizer = oxidizer or meta.training.get("oxidizer")
    if not fuel or not oxidizer:
        raise InputError("fuel/oxidizer: the model does not record them; pass --fuel and --oxidizer")
    if temperature_k is None:
        temperature_k = 1200.0 if kind == "chemfoam" else 300.0
    return CaseSpec(kind=kind, model=model, temperature_k=temperature_k,
                    pressure_pa=pressure_atm * ONE_ATM_PA, phi=phi, fuel=fuel, oxidizer=oxidizer, **extra)
