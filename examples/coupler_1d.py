"""A CFD coupler in miniature: a 1D operator-split reacting flow whose chemistry goes through the
deepkin service, and, for comparison, through Cantera directly.

Premixed hydrogen/air at constant pressure on a line of ``--cells`` cells with a hot spot in the
middle. Each time step of ``--dt`` seconds: explicit diffusion of T and Y (unity Lewis number,
constant diffusivity), then one chemistry step of every cell, the way a flow solver calls the
service once per step per rank. At the end it prints the largest temperature difference between
the two chemistry paths and the wall time each took::

    deepkin serve &                                   # the shipped h2-air model on :8000
    python examples/coupler_1d.py --url http://127.0.0.1:8000 --model h2-air

``--chemistry`` picks the paths (``service``, ``cantera``, ``integrator`` = the model file stepped
in-process, which must agree with ``service`` bit for bit); ``--save out.npz`` keeps the final
fields.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mechanisms.loading import load_mechanism  # noqa: E402
from mechanisms.reactor import ReactorStep  # noqa: E402
from mechanisms.state import join_states, mass_fractions, normalise_mass_fractions, temperature  # noqa: E402
from service.client import Client  # noqa: E402


def initial_field(gas, cells: int, length_m: float, pressure_pa: float,
                  t_cold_k: float, t_hot_k: float, phi: float) -> np.ndarray:
    """``[cells, 2+ns]`` premixed H2/air at ``pressure_pa`` with a Gaussian hot spot (K)."""
    x = (np.arange(cells) + 0.5) / cells * length_m
    width = 0.1 * length_m
    t_k = t_cold_k + (t_hot_k - t_cold_k) * np.exp(-(((x - length_m / 2) / width) ** 2))
    gas.TPX = 300.0, pressure_pa, f"H2:{2 * phi},O2:1,N2:3.76"
    return join_states(t_k, np.full(cells, pressure_pa), np.tile(gas.Y, (cells, 1)))


def diffuse(states: np.ndarray, dt_s: float, dx_m: float, diffusivity_m2_s: float) -> np.ndarray:
    """One explicit diffusion step of T and Y (zero-gradient ends); P stays."""
    out = states.copy()
    padded = np.concatenate([states[:1], states, states[-1:]])
    lap = padded[2:] - 2 * padded[1:-1] + padded[:-2]
    coeff = diffusivity_m2_s * dt_s / dx_m ** 2
    t_k, y = temperature(out), mass_fractions(out)  # views: updated in place
    t_k += coeff * temperature(lap)
    y += coeff * mass_fractions(lap)
    return normalise_mass_fractions(out)


def run(chemistry, states: np.ndarray, steps: int, dt_s: float, dx_m: float, diffusivity: float
        ) -> tuple[np.ndarray, float]:
    """Advance ``steps`` operator-split steps; returns the final states and the chemistry wall time (s)."""
    chem_s = 0.0
    for _ in range(steps):
        states = diffuse(states, dt_s, dx_m, diffusivity)
        t0 = time.perf_counter()
        states = chemistry(states)
        chem_s += time.perf_counter() - t0
    return states, chem_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="h2-air", help="Model name on the service")
    ap.add_argument("--token", help="Bearer token, when the service wants one")
    ap.add_argument("--model-file", help="Model file for --chemistry integrator")
    ap.add_argument("--chemistry", default="service,cantera",
                    help="Comma-separated: service, cantera, integrator")
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--dt", type=float, default=None, help="Flow step (s); default: the model's dt")
    ap.add_argument("--length-m", type=float, default=0.02)
    ap.add_argument("--diffusivity", type=float, default=2e-5, help="m²/s, for T and every Y")
    ap.add_argument("--t-hot", type=float, default=1500.0)
    ap.add_argument("--t-cold", type=float, default=1000.0)
    ap.add_argument("--pressure-pa", type=float, default=101325.0)
    ap.add_argument("--phi", type=float, default=1.0)
    ap.add_argument("--save", help="Write the final fields of each path to this .npz file")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.chemistry.split(",") if p.strip()]

    client = Client(args.url, token=args.token)
    info = client.model(args.model)
    mech = load_mechanism(info["mechanism_source"], info["phase"])
    if mech.species_names != info["species"]:
        print("error: the model's species order differs from its mechanism file", file=sys.stderr)
        return 1
    dt_s = args.dt or info["dt_s"]
    dx_m = args.length_m / args.cells
    if args.diffusivity * dt_s / dx_m ** 2 > 0.5:
        print("error: explicit diffusion is unstable for this dt and mesh", file=sys.stderr)
        return 1
    gas = mech.solution()
    start = initial_field(gas, args.cells, args.length_m, args.pressure_pa,
                          args.t_cold, args.t_hot, args.phi)

    def via_service(states):
        return client.step(args.model, states, dt=dt_s, mechanism_sha256=mech.sha256).states

    stepper = ReactorStep(gas, dt_s)

    def via_cantera(states):
        return np.array([stepper.advance(row)[1] for row in states])

    integrator = None
    if "integrator" in paths:
        from kinetics.integrator import Integrator

        integrator = Integrator.load(args.model_file, device="cpu")

    def via_integrator(states):
        return integrator.step(states, dt_s)

    chemistry = {"service": via_service, "cantera": via_cantera, "integrator": via_integrator}
    results = {}
    for name in paths:
        final, chem_s = run(chemistry[name], start, args.steps, dt_s, dx_m, args.diffusivity)
        results[name] = final
        print(f"{name:<10} {args.cells} cells × {args.steps} steps of {dt_s:g} s: chemistry "
              f"{chem_s:.3f} s wall, T max {temperature(final).max():.2f} K")
    for a, b in (("service", "cantera"), ("service", "integrator")):
        if a in results and b in results:
            diff = np.abs(temperature(results[a]) - temperature(results[b])).max()
            print(f"largest |T_{a} − T_{b}| = {diff:.6g} K")
    if args.save:
        np.savez(args.save, **results)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
