"""A planar counterflow diffusion flame in reactingFoam, on the geometry of OpenFOAM's
``counterFlowFlame2D`` tutorial: 20 mm between the fuel (x = 0) and air (x = 20 mm) inlets,
20 mm across (y = ±10 mm, open outlets), 100 × 40 cells, fixed deltaT = k × the model's dt.

The tutorial starts from 2000 K gas at rest and runs 0.5 s on EulerImplicit chemistry with an
adjustable time step; with a fixed deltaT of microseconds that is 10^5 steps. Here the fields
start from Cantera's counterflow flame between the same inlets (axisymmetric, the nearest Cantera
has; mapped along x, uniform in y, with the transverse velocity v = 2·V(x)·y that planar
continuity gives from Cantera's spread rate V), so that a few tens of milliseconds bring the flame
to OpenFOAM's own steady state. :func:`counterflow_flame` reads the peak temperature and its
position on the centre line (y = 0) from a written time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cantera as ct
import numpy as np

from couplers.openfoam.foam import read_internal_field, scalar_list, vector_list, write_foam_file
from couplers.openfoam.reacting_files import ReactingSolverSettings, write_reacting_files
from mechanisms.errors import InputError
from mechanisms.ignition import IGNITION_RISE_K

LENGTH_M = 0.02  # fuel inlet to air inlet (x)
HEIGHT_M = 0.02  # across, y = −10 … +10 mm
PATCHES = ("fuel", "air", "outlet")


def cantera_counterflow(gas: ct.Solution, pressure_pa: float, fuel_y: np.ndarray,
                        oxidizer_y: np.ndarray, temperature_k: float, velocity_m_s: float
                        ) -> ct.CounterflowDiffusionFlame:
    """Cantera's counterflow flame between inlets :data:`LENGTH_M` apart, both at ``velocity_m_s``
    (m/s) and ``temperature_k`` (K); InputError when it does not burn."""
    gas.TPY = temperature_k, pressure_pa, fuel_y
    rho_f = gas.density
    gas.TPY = temperature_k, pressure_pa, oxidizer_y
    rho_o = gas.density
    flame = ct.CounterflowDiffusionFlame(gas, width=LENGTH_M)
    flame.P = pressure_pa
    flame.fuel_inlet.Y, flame.fuel_inlet.T = fuel_y, temperature_k
    flame.fuel_inlet.mdot = rho_f * velocity_m_s
    flame.oxidizer_inlet.Y, flame.oxidizer_inlet.T = oxidizer_y, temperature_k
    flame.oxidizer_inlet.mdot = rho_o * velocity_m_s
    flame.set_refine_criteria(ratio=3.0, slope=0.05, curve=0.1, prune=0.02)
    flame.solve(loglevel=0, auto=True)
    if flame.T.max() < temperature_k + IGNITION_RISE_K:
        raise InputError(f"velocity: no counterflow flame at {velocity_m_s:g} m/s (Cantera's "
                         f"peak temperature is {flame.T.max():.0f} K); lower the inlet velocity")
    return flame


def write_counterflow(out: Path, gas: ct.Solution, pressure_pa: float, fuel_y: np.ndarray,
                      oxidizer_y: np.ndarray, temperature_k: float, velocity_m_s: float,
                      nx: int, ny: int, dt: float, end_time_s: float | None,
                      write_interval_s: float | None) -> dict:
    """Mesh, fields and controls of the case in ``out``; what ``deepkin-case.json`` records."""
    flame = cantera_counterflow(gas, pressure_pa, fuel_y, oxidizer_y, temperature_k, velocity_m_s)
    dx, dy = LENGTH_M / nx, HEIGHT_M / ny
    x = (np.arange(nx) + 0.5) * dx
    y = (np.arange(ny) + 0.5) * dy - 0.5 * HEIGHT_M
    # blockMesh numbers the cells of one hex block x fastest: cell = i + nx·j.
    xx, yy = np.tile(x, ny), np.repeat(y, nx)
    temps = np.interp(xx, flame.grid, flame.T)
    ys = np.array([np.interp(xx, flame.grid, flame.Y[k]) for k in range(gas.n_species)])
    ys = np.clip(ys, 0.0, None)
    ys /= ys.sum(axis=0)
    velocity = np.zeros((nx * ny, 3))
    velocity[:, 0] = np.interp(xx, flame.grid, flame.velocity)
    velocity[:, 1] = 2.0 * np.interp(xx, flame.grid, flame.spread_rate) * yy
    end = end_time_s or 0.02
    steps = max(1, round(end / dt))
    write_every = min(steps, max(1, round((write_interval_s or 1e-3) / dt)))
    _mesh(out, nx, ny)
    _fields(out, gas, pressure_pa, fuel_y, oxidizer_y, temperature_k, velocity_m_s, temps, ys,
            velocity)
    write_reacting_files(out, dt, steps, write_every, COUNTERFLOW_SOLVER)
    i_peak = int(np.argmax(flame.T))
    return {"cells": nx * ny, "cells_x": nx, "cells_y": ny, "dx_m": dx, "dy_m": dy,
            "length_m": LENGTH_M, "height_m": HEIGHT_M, "end_time_s": steps * dt,
            "write_interval_s": write_every * dt, "inlet_velocity_m_s": velocity_m_s,
            "fuel_y": [float(v) for v in fuel_y], "oxidizer_y": [float(v) for v in oxidizer_y],
            "cantera_peak_temperature_k": float(flame.T[i_peak]),
            "cantera_peak_position_m": float(flame.grid[i_peak]),
            "cantera_strain_rate_s": float(flame.strain_rate("max"))}


def _mesh(out: Path, nx: int, ny: int) -> None:
    half = 0.5 * HEIGHT_M
    depth = 0.5 * HEIGHT_M
    write_foam_file(out / "system" / "blockMeshDict", f"""convertToMeters 1;

vertices
(
    (0 {-half:g} {-depth:g})
    ({LENGTH_M:g} {-half:g} {-depth:g})
    ({LENGTH_M:g} {half:g} {-depth:g})
    (0 {half:g} {-depth:g})
    (0 {-half:g} {depth:g})
    ({LENGTH_M:g} {-half:g} {depth:g})
    ({LENGTH_M:g} {half:g} {depth:g})
    (0 {half:g} {depth:g})
);

blocks
(
    hex (0 1 2 3 4 5 6 7) ({nx} {ny} 1) simpleGrading (1 1 1)
);

edges
(
);

boundary
(
    fuel
    {{
        type patch;
        faces ((0 4 7 3));
    }}
    air
    {{
        type patch;
        faces ((1 2 6 5));
    }}
    outlet
    {{
        type patch;
        faces ((0 1 5 4) (7 6 2 3));
    }}
    frontAndBack
    {{
        type empty;
        faces ((4 5 6 7) (0 3 2 1));
    }}
);

mergePatchPairs
(
);
""")


def _field(out: Path, name: str, cls: str, dimensions: str, internal: str,
           patches: dict[str, str]) -> None:
    body = "\n".join(f"    {patch}\n    {{\n{patches[patch]}\n    }}" for patch in PATCHES)
    write_foam_file(out / "0" / name, f"""dimensions      {dimensions};

internalField   {internal};

boundaryField
{{
{body}
    frontAndBack
    {{
        type            empty;
    }}
}}
""", cls=cls)


def _fixed(value: str) -> str:
    return f"        type            fixedValue;\n        value           {value};"


def _inlet_outlet(value: str) -> str:
    return (f"        type            inletOutlet;\n        inletValue      {value};\n"
            f"        value           {value};")


def _fields(out: Path, gas: ct.Solution, pressure_pa: float, fuel_y: np.ndarray,
            oxidizer_y: np.ndarray, temperature_k: float, velocity_m_s: float, temps: np.ndarray,
            ys: np.ndarray, velocity: np.ndarray) -> None:
    inlet_t = f"uniform {temperature_k:.17g}"
    _field(out, "T", "volScalarField", "[0 0 0 1 0 0 0]", scalar_list(temps),
           {"fuel": _fixed(inlet_t), "air": _fixed(inlet_t), "outlet": _inlet_outlet(inlet_t)})
    zero_gradient = "        type            zeroGradient;"
    _field(out, "p", "volScalarField", "[1 -1 -2 0 0 0 0]", f"uniform {pressure_pa:.17g}",
           {"fuel": zero_gradient, "air": zero_gradient,
            "outlet": f"        type            totalPressure;\n        p0              uniform "
                      f"{pressure_pa:.17g};\n        value           uniform {pressure_pa:.17g};"})
    _field(out, "U", "volVectorField", "[0 1 -1 0 0 0 0]", vector_list(velocity),
           {"fuel": _fixed(f"uniform ({velocity_m_s:.17g} 0 0)"),
            "air": _fixed(f"uniform ({-velocity_m_s:.17g} 0 0)"),
            "outlet": "        type            pressureInletOutletVelocity;\n"
                      "        value           uniform (0 0 0);"})
    for k, name in enumerate(gas.species_names):
        # Gas entering through the outlets (it hardly does) is taken as air.
        _field(out, name, "volScalarField", "[0 0 0 0 0 0 0]", scalar_list(ys[k]),
               {"fuel": _fixed(f"uniform {fuel_y[k]:.17g}"),
                "air": _fixed(f"uniform {oxidizer_y[k]:.17g}"),
                "outlet": _inlet_outlet(f"uniform {oxidizer_y[k]:.17g}")})
    _field(out, "Ydefault", "volScalarField", "[0 0 0 0 0 0 0]", "uniform 0",
           {"fuel": _fixed("uniform 0"), "air": _fixed("uniform 0"),
            "outlet": _inlet_outlet("uniform 0")})


# the counterflow's own solver settings: an orthogonal mesh, split across the jets for 2 ranks
COUNTERFLOW_SOLVER = ReactingSolverSettings(non_orthogonal="orthogonal", p_tolerance=1e-8,
                                            transport_tolerance=1e-10, momentum_predictor=False,
                                            subdomains=(1, 2, 1))


@dataclass
class CounterflowFlame:
    """The flame on the centre line at one written time: peak T (K) and where it is (m from the
    fuel inlet), both from a parabola through the hottest cell and its neighbours."""

    time_s: float
    peak_temperature_k: float
    peak_position_m: float
    max_temperature_k: float  # anywhere in the domain


def centreline(info: dict, field: np.ndarray) -> np.ndarray:
    """The values ``[nx]`` of a cell field on y = 0 (the mean of the two rows beside it)."""
    nx, ny = info["cells_x"], info["cells_y"]
    grid = np.asarray(field).reshape(ny, nx)
    return 0.5 * (grid[ny // 2 - 1] + grid[ny // 2]) if ny % 2 == 0 else grid[ny // 2]


def counterflow_flame(case: Path, time_dir: Path, time_s: float, info: dict) -> CounterflowFlame:
    """Peak temperature and its position on the centre line, read from ``time_dir``'s T."""
    temps = read_internal_field(time_dir / "T")
    line = centreline(info, temps)
    dx = info["dx_m"]
    i = int(np.clip(np.argmax(line), 1, len(line) - 2))
    a, b, c = line[i - 1], line[i], line[i + 1]
    curvature = a - 2.0 * b + c
    shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    shift = float(np.clip(shift, -0.5, 0.5))
    peak = b - 0.25 * (a - c) * shift
    return CounterflowFlame(time_s, float(peak), float((i + 0.5 + shift) * dx), float(temps.max()))


def counterflow_history(case: Path) -> list[CounterflowFlame]:
    """:class:`CounterflowFlame` of every written time of a case (``0`` included), in order."""
    from couplers.openfoam.foam import time_directories
    from couplers.openfoam.results import case_info

    info = case_info(case)
    return [counterflow_flame(case, folder, t, info) for t, folder in time_directories(case)
            if (folder / "T").is_file()]
