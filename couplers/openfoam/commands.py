"""``deepkin openfoam …``: build the chemistry library, export a model into a case, write cases.

Only click is imported here; each command imports what it needs when it runs.
"""

from __future__ import annotations

import click

from kinetics.model.precisions import INFERENCE_PRECISIONS


@click.group("openfoam")
def openfoam() -> None:
    """deepkin chemistry for OpenFOAM (ESI v1912, Debian's): build, export, ready-made cases,
    a run's cell states."""


@openfoam.command("build")
@click.option("--home", "home_dir", type=click.Path(file_okay=False),
              help="Folder for the OpenFOAM sources, build files and the library "
                   "(default $DEEPKIN_OPENFOAM_HOME or ~/.cache/deepkin/openfoam).")
@click.option("--source", type=click.Path(file_okay=False),
              help="An unpacked OpenFOAM v1912 source tree to take headers and wmake from "
                   "(default: apt-get source openfoam, once).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the library's path.")
def build_cmd(home_dir, source, quiet) -> None:
    """Compile libdeepkinChemistry.so and deepkinChemistryTime; the library's path is the last line."""
    from pathlib import Path

    from couplers.openfoam.build import build, timer_path

    library = build(Path(home_dir) if home_dir else None, Path(source) if source else None,
                    log=None if quiet else (lambda line: click.echo(line, err=True)))
    if not quiet:
        click.echo(f"built {timer_path(library.parent.parent)}", err=True)
    click.echo(str(library))


@openfoam.command("export")
@click.argument("model")
@click.argument("case_dir", type=click.Path(file_okay=False))
@click.option("--chemistry", type=click.Choice(["deepkin", "deepkin-inprocess", "ode"]), default="deepkin",
              show_default=True,
              help="deepkin: the service's model; deepkin-inprocess: the model exported into the "
                   "case (constant/deepkin-model.pt), stepped in every rank's own process; ode: "
                   "OpenFOAM's own chemistry on the same mechanism.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The deepkin service (deepkin serve) the case's chemistry calls.")
@click.option("--model-name", help="The name the service serves the model under (default: MODEL's).")
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
              help="Seconds per request, retries of refused connections and 503 included.")
@click.option("--library", type=click.Path(dir_okay=False),
              help="The chemistry library for controlDict's libs (default: deepkin openfoam build's).")
@click.option("--threads", type=click.IntRange(min=0),
              help="deepkin-inprocess: libtorch threads per rank [default: 1, one rank per core; "
                   "0: libtorch's own choice].")
@click.option("--precision", type=click.Choice(["auto", *INFERENCE_PRECISIONS]), default="auto",
              show_default=True,
              help="deepkin-inprocess: the networks' dtype in the file (auto: as the service "
                   "would run the model on this machine).")
def export_cmd(model, case_dir, chemistry, url, model_name, timeout_s, library, threads,
               precision) -> None:
    """Rewrite CASE_DIR's mechanism, thermo and chemistry from MODEL (a shipped name or a file)."""
    from pathlib import Path

    from couplers.openfoam.export import export_case

    result = export_case(model, case_dir, chemistry, url=url, model_name=model_name, timeout_s=timeout_s,
                         library=Path(library) if library else None, threads=threads,
                         precision=precision)
    _report(result, chemistry)


@openfoam.command("case")
@click.argument("kind", type=click.Choice(["chemfoam", "flame1d", "counterflow"]))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="New case folder (must not exist or be empty).")
@click.option("--model", default="h2-air", show_default=True, help="Shipped model name or model file.")
@click.option("--T0", "--temperature-k", "temperature_k", type=float,
              help="Initial (chemfoam) or unburnt (flame1d) temperature in K [default: 1200 / 300].")
@click.option("--pressure-atm", type=float, default=1.0, show_default=True, help="Pressure in atm.")
@click.option("--phi", type=float, default=1.0, show_default=True, help="Equivalence ratio.")
@click.option("--fuel", help="Fuel (mole basis; counterflow: the fuel stream), default the model's "
                            "dataset's, e.g. 'H2:1' or 'H2:0.5,N2:0.5'.")
@click.option("--oxidizer", help="Oxidiser (mole basis), default the model's dataset's.")
@click.option("--chemistry", type=click.Choice(["deepkin", "deepkin-inprocess", "ode"]), default="deepkin",
              show_default=True, help="deepkin: the service at --url; deepkin-inprocess: the model "
                                      "exported into the case, stepped in every rank; ode: OpenFOAM's.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--threads", type=click.IntRange(min=0),
              help="deepkin-inprocess: libtorch threads per rank [default: 1, one rank per core; "
                   "0: libtorch's own choice].")
@click.option("--end-time", "end_time_s", type=float,
              help="Simulated time in s [default: 3 x Cantera's ignition delay / 1 ms for the flame].")
@click.option("--steps-per-call", type=int, default=1, show_default=True,
              help="deltaT = this many model steps.")
@click.option("--cells", type=int, help="flame1d: cells along x [default 400]; counterflow: cells "
                                        "between the inlets [default 100].")
@click.option("--cells-y", type=int, default=40, show_default=True,
              help="counterflow: cells across (20 mm).")
@click.option("--velocity", "velocity_m_s", type=float, default=1.0, show_default=True,
              help="counterflow: speed of each inlet jet in m/s.")
@click.option("--length-mm", type=float, help="flame1d: domain length in mm [default: 30 flame thicknesses].")
@click.option("--ranks", type=int, default=2, show_default=True,
              help="flame1d: subdomains in system/decomposeParDict.")
def case_cmd(kind, output, model, temperature_k, pressure_atm, phi, fuel, oxidizer, chemistry, url,
             threads, end_time_s, steps_per_call, cells, cells_y, velocity_m_s, length_mm, ranks) -> None:
    """Write a ready-to-run chemFoam, 1D premixed-flame or 2D counterflow diffusion-flame
    (reactingFoam) case on MODEL's mechanism."""
    import json
    from pathlib import Path

    from couplers.openfoam.cases import CASE_INFO, spec_from_options, write_case

    spec = spec_from_options(kind, model, temperature_k, pressure_atm, phi, fuel, oxidizer,
                             chemistry=chemistry, url=url, end_time_s=end_time_s,
                             steps_per_call=steps_per_call,
                             cells=cells or (100 if kind == "counterflow" else 400),
                             cells_y=cells_y, velocity_m_s=velocity_m_s,
                             length_m=length_mm * 1e-3 if length_mm is not None else None, ranks=ranks,
                             threads=threads)
    result = write_case(spec, output)
    info = json.loads((Path(output) / CASE_INFO).read_text())
    if kind == "chemfoam":
        idt = info["cantera_ignition_delay_s"]
        click.echo(f"chemFoam case, {spec.temperature_k:g} K, {pressure_atm:g} atm, phi {phi:g}: "
                   f"{round(info['end_time_s'] / info['dt_s'])} steps of {info['dt_s']:g} s; Cantera "
                   f"ignition delay {idt * 1e6:.2f} us" if idt else "no ignition in Cantera")
        click.echo(f"run: WM_PROJECT_DIR=/usr/share/openfoam chemFoam -case {output}")
    elif kind == "counterflow":
        click.echo(f"counterflow case, {info['cells_x']} x {info['cells_y']} cells over 20 x 20 mm, "
                   f"{spec.fuel} against {spec.oxidizer} at {spec.temperature_k:g} K, "
                   f"{pressure_atm:g} atm, inlets {velocity_m_s:g} m/s: "
                   f"{round(info['end_time_s'] / info['dt_s'])} steps of {info['dt_s']:g} s; Cantera "
                   f"(axisymmetric) peak {info['cantera_peak_temperature_k']:.0f} K at "
                   f"{info['cantera_peak_position_m'] * 1e3:.2f} mm, strain "
                   f"{info['cantera_strain_rate_s']:.0f} 1/s")
        click.echo(f"run: WM_PROJECT_DIR=/usr/share/openfoam reactingFoam -case {output}")
    else:
        click.echo(f"1D flame case, {info['cells']} cells over {info['length_m'] * 1e3:.2f} mm, "
                   f"{spec.temperature_k:g} K, {pressure_atm:g} atm, phi {phi:g}: "
                   f"{round(info['end_time_s'] / info['dt_s'])} steps of {info['dt_s']:g} s; Cantera "
                   f"flame speed {info['cantera_flame_speed_m_s']:.3f} m/s (mixture-averaged)")
        click.echo(f"run: WM_PROJECT_DIR=/usr/share/openfoam reactingFoam -case {output}")
    _report(result, chemistry)


@openfoam.command("states")
@click.argument("case_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="States file (HDF5) to write, for deepkin sample --solver-states.")
@click.option("--from-time", "from_time_s", type=float,
              help="Take the times after this one, in s [default: every time but the first].")
def states_cmd(case_dir, output, from_time_s) -> None:
    """Write every cell's state (T, p, mass fractions) at each written time of a finished run
    of CASE_DIR into a states file: the solver's own states, to label and train on."""
    from couplers.openfoam.states import case_states
    from mechanisms.states_file import write_states

    states, species, origin = case_states(case_dir, from_time_s)
    write_states(output, states, species, origin)
    click.echo(f"wrote {len(states)} cell states ({len(species)} species) to {output}: {origin}")


def _report(result, chemistry: str) -> None:
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    mechanism = result.meta.mechanism_source
    click.echo(f"wrote {len(result.files)} files in {result.case_dir}: {mechanism} "
               f"({len(result.meta.species)} species; Sutherland fits within "
               f"{100 * result.max_viscosity_fit_error:.1f} % of Cantera's viscosities); chemistry "
               f"{chemistry}"
               + (f" from model {result.model_name}" if chemistry.startswith("deepkin") else ""))
