"""``deepkin openfoam export``: make an OpenFOAM case use a model's mechanism, and its chemistry.

Rewritten in ``constant/``: ``reactions`` (species and reactions) and ``thermo.compressibleGas``
(NASA-7 thermo, Sutherland transport) from the model's embedded mechanism (see
:mod:`couplers.openfoam.mechanism`); ``thermophysicalProperties`` (janaf/sutherland/perfectGas,
keeping the case's thermo type, energy variable and inert species where they fit); the whole of
``chemistryProperties`` (``chemistryType { solver deepkin | ode; method standard; }``, ode and
deepkin coefficients). In ``system/controlDict`` the ``libs`` entry gains (deepkin) or loses (ode)
the chemistry library; nothing else of the case changes.

Chemistries: ``deepkin`` (the service at a URL, one request per rank and time step),
``deepkin-inprocess`` (the model's step exported by :func:`kinetics.step.compiled_step.export_model`
into ``constant/deepkin-model.pt``, which every rank loads and steps in its own process; cells
outside the model's domain go to OpenFOAM's ODE chemistry of ``odeCoeffs``) and ``ode``
(OpenFOAM's own chemistry). Time-step settings the deepkin solver
would refuse are reported as notes, not changed.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from couplers.openfoam.build import LIBRARY_NAME, library_path
from couplers.openfoam.foam import entry, strip_comments, write_foam_file
from couplers.openfoam.mechanism import REACTIONS_FILE, THERMO_FILE, write_foam_mechanism
from kinetics.model.model_file import ModelMeta, read_model_file
from kinetics.model.registry import resolve_model
from mechanisms.errors import InputError
from mechanisms.loading import has_transport, solution_from_yaml

CHEMISTRIES = ("deepkin", "deepkin-inprocess", "ode")
DEEPKIN_CHEMISTRIES = ("deepkin", "deepkin-inprocess")  # the ones the chemistry library serves
MODEL_FILE = "deepkin-model.pt"  # deepkin-inprocess: the exported step, in constant/
DEFAULT_URL = "http://127.0.0.1:8000"
ODE_COEFFS = {"solver": "seulex", "absTol": "1e-12", "relTol": "1e-4"}


@dataclass
class ExportResult:
    """What ``export_case`` wrote and what the user should know before running."""

    case_dir: Path
    model_name: str
    meta: ModelMeta
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_viscosity_fit_error: float = 0.0


def load_model(model: str | Path) -> tuple[str, ModelMeta, str]:
    """``(name served under, meta, mechanism YAML)`` of a shipped model name or a model file.

    A case command asks for the same file several times (options, mesh, export); it is read and
    checked once per version of the file (its path, size and modification time)."""
    path = resolve_model(model)
    stat = path.stat()
    meta, yaml_text = _read_checked(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return path.stem, meta, yaml_text


@functools.lru_cache(maxsize=4)
def _read_checked(path: str, size: int, mtime_ns: int) -> tuple[ModelMeta, str]:
    meta, _, yaml_text = read_model_file(path)
    return meta, yaml_text


def export_case(model: str | Path, case_dir: str | Path, chemistry: str = "deepkin", url: str = DEFAULT_URL,
                model_name: str | None = None, timeout_s: float = 60.0, library: Path | None = None,
                threads: int | None = None, device: str = "cpu", precision: str = "auto") -> ExportResult:
    """Rewrite the case's mechanism, thermo and chemistry files from ``model``.

    ``chemistry``: ``deepkin`` (the service at ``url`` serves the model under ``model_name``,
    default the model file's stem), ``deepkin-inprocess`` (the model's step exported to
    ``constant/deepkin-model.pt`` on ``device`` with its networks in ``precision``, loaded by
    every rank; ``auto``, as the service decides: the model's validated inference precision on a
    CPU that multiplies bfloat16 natively, float32 elsewhere, so that both modes give the same
    states; ``threads``: libtorch threads per rank, default 1: one rank per core; 0: libtorch's
    own choice) or ``ode``
    (OpenFOAM's own chemistry on the same mechanism). ``timeout_s`` (s): per request, retries
    included. ``library``: the chemistry library to load (default: where ``deepkin openfoam
    build`` puts it). Raises InputError for a folder that is not an OpenFOAM case or a bad
    option.
    """
    case = Path(case_dir)
    if chemistry not in CHEMISTRIES:
        raise InputError(f"chemistry: '{chemistry}' is not one of {', '.join(CHEMISTRIES)}")
    if not (case / "system" / "controlDict").is_file():
        raise InputError(f"case: {case} is not an OpenFOAM case (no system/controlDict)")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InputError(f"timeout: must be > 0 s, got {timeout_s}")
    if threads is not None and threads < 0:
        raise InputError(f"threads: must be >= 0 (0: libtorch's own choice), got {threads}")
    if chemistry != "deepkin-inprocess" and not re.match(r"^https?://[^\s\"]+$", url):
        raise InputError(f"url: '{url}' is not an http(s) URL such as {DEFAULT_URL}")
    served_name, meta, yaml_text = load_model(model)
    name = model_name or served_name
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    if not has_transport(gas):
        raise InputError(f"model: the mechanism of {name} has no transport data (OpenFOAM's "
                         "Sutherland coefficients are fitted to it)")
    result = ExportResult(case, name, meta)
    constant = case / "constant"
    fits = write_foam_mechanism(gas, constant)
    result.max_viscosity_fit_error = max(f.max_rel_error for f in fits.values())
    result.files += [constant / REACTIONS_FILE, constant / THERMO_FILE]
    result.files.append(_write_thermophysical(constant / "thermophysicalProperties", meta, result))
    if chemistry == "deepkin-inprocess":
        result.files.append(_export_step(model, constant / MODEL_FILE, meta, device, precision))
    result.files.append(_write_chemistry(constant / "chemistryProperties", chemistry, name, meta, url,
                                         timeout_s, threads))
    lib = Path(library) if library else library_path()
    served = chemistry in DEEPKIN_CHEMISTRIES
    result.files.append(_edit_libs(case / "system" / "controlDict", lib if served else None))
    if served:
        _check_time_step(case / "system" / "controlDict", meta.dt_s, result)
        if not lib.is_file():
            result.notes.append(f"{lib} is not built yet: run `deepkin openfoam build`")
    _check_initial_conditions(constant / "initialConditions", meta.species, result)
    return result


def _export_step(model: str | Path, out: Path, meta: ModelMeta, device: str, precision: str) -> Path:
    """``deepkin export`` of ``model`` to ``out``, ``auto`` precision resolved as the service
    resolves it (:func:`kinetics.step.forward.network_precision`)."""
    from kinetics.step.compiled_step import export_model
    from kinetics.step.device import resolve_device
    from kinetics.step.forward import network_precision

    if precision == "auto":
        precision = network_precision("auto", meta.inference_precision, resolve_device(device))
    return export_model(resolve_model(model), out, precision=precision, device=device)


def _write_thermophysical(path: Path, meta: ModelMeta, result: ExportResult) -> Path:
    old = path.read_text(errors="replace") if path.is_file() else ""
    thermo_type = _sub_entry(old, "thermoType", "type") or "hePsiThermo"
    energy = _sub_entry(old, "thermoType", "energy") or "sensibleEnthalpy"
    if energy not in ("sensibleEnthalpy", "sensibleInternalEnergy"):
        result.notes.append(f"thermophysicalProperties: energy {energy} replaced by sensibleEnthalpy")
        energy = "sensibleEnthalpy"
    inert = entry(old, "inertSpecie")
    if inert not in meta.species:
        inert = "N2" if "N2" in meta.species else (meta.inert_species or meta.species)[-1]
    body = f"""thermoType
{{
    type            {thermo_type};
    mixture         reactingMixture;
    transport       sutherland;
    thermo          janaf;
    energy          {energy};
    equationOfState perfectGas;
    specie          specie;
}}

inertSpecie     {inert};

// Mechanism {meta.mechanism_source} (sha256 {meta.mechanism_sha256}), written by deepkin openfoam export
chemistryReader foamChemistryReader;

foamChemistryFile "<constant>/{REACTIONS_FILE}";

foamChemistryThermoFile "<constant>/{THERMO_FILE}";
"""
    return write_foam_file(path, body)


def _write_chemistry(path: Path, chemistry: str, name: str, meta: ModelMeta, url: str,
                     timeout_s: float, threads: int | None = None) -> Path:
    old = path.read_text(errors="replace") if path.is_file() else ""
    # chemFoam's first deltaT with adjustTimeStep on is initialChemicalTimeStep; deepkin then keeps it
    served = chemistry in DEEPKIN_CHEMISTRIES
    initial_dt = (f"{meta.dt_s:g}" if served
                  else entry(old, "initialChemicalTimeStep") or "1e-07")
    ode = "\n".join(f"    {k:<16}{v};" for k, v in ODE_COEFFS.items())
    if chemistry == "deepkin-inprocess":
        thread_line = f"\n    threads         {threads};" if threads is not None else ""
        coeffs = f"""\
// Every rank loads the model file (deepkin export) and steps its own cells in its own process;
// the cells outside the model's domain are stepped by OpenFOAM's ODE chemistry (odeCoeffs).
// deltaT must be a whole multiple of the model's dt ({meta.dt_s:g} s).
deepkinCoeffs
{{
    modelFile       "<constant>/{MODEL_FILE}";
    model           {name};
    mechanismSha256 "{meta.mechanism_sha256}";{thread_line}
}}
"""
    else:
        coeffs = f"""\
// One request per rank and time step to a deepkin service (deepkin serve); deltaT must be a
// whole multiple of the model's dt ({meta.dt_s:g} s). Token: the `token` entry or $DEEPKIN_TOKEN.
deepkinCoeffs
{{
    url             "{url}";
    model           {name};
    mechanismSha256 "{meta.mechanism_sha256}";
    timeout         {timeout_s:g};
}}
"""
    solver = "deepkin" if served else chemistry
    body = f"""chemistryType
{{
    solver          {solver};
    method          standard;
}}

chemistry       on;

initialChemicalTimeStep {initial_dt};

odeCoeffs
{{
{ode}
}}

{coeffs}"""
    return write_foam_file(path, body)


def _edit_libs(control_dict: Path, library: Path | None) -> Path:
    """Add ``library`` to the ``libs`` entry (or drop any deepkin chemistry library when None)."""
    text = control_dict.read_text(errors="replace")
    match = re.search(r"^(\s*libs\s*\()(.*?)(\)\s*;)", text, flags=re.M | re.S)
    existing = re.findall(r'"([^"]*)"', match.group(2)) if match else []
    kept = [lib for lib in existing if not lib.endswith(LIBRARY_NAME)]
    if library is not None:
        kept.append(str(library))
    new_entry = "libs (" + " ".join(f'"{lib}"' for lib in kept) + ");" if kept else ""
    if match:
        text = text[:match.start()] + ("\n" + new_entry if new_entry else "") + text[match.end():]
    elif new_entry:
        text = text.rstrip() + "\n\n" + new_entry + "\n"
    control_dict.write_text(text)
    return control_dict


def _check_time_step(control_dict: Path, dt_s: float, result: ExportResult) -> None:
    text = control_dict.read_text(errors="replace")
    adjust = (entry(text, "adjustTimeStep") or "off").lower()
    delta = entry(text, "deltaT")
    application = entry(text, "application") or ""
    if adjust in ("on", "yes", "true"):
        if application == "chemFoam":  # its deltaT follows the chemistry's: dt from the first step
            return
        result.notes.append(f"system/controlDict: adjustTimeStep is {adjust}; the deepkin chemistry "
                            f"refuses a deltaT that is not a whole multiple of {dt_s:g} s: set "
                            "adjustTimeStep off")
    try:
        ratio = float(delta) / dt_s if delta else None
    except ValueError:
        ratio = None
    if ratio is None or ratio < 0.5 or abs(ratio - round(ratio)) > 1e-6 * ratio:
        result.notes.append(f"system/controlDict: deltaT {delta} is not a whole multiple of the "
                            f"model's dt {dt_s:g} s; the deepkin chemistry will refuse it")


def _check_initial_conditions(path: Path, species: list[str], result: ExportResult) -> None:
    """chemFoam's initialConditions must name species of the mechanism."""
    if not path.is_file():
        return
    text = strip_comments(path.read_text(errors="replace"))
    block = re.search(r"fractions\s*\{(.*?)\}", text, flags=re.S)
    if block:
        names = re.findall(r"^\s*([A-Za-z0-9_()+\-*,]+)\s+[-+0-9.eE]+\s*;", block.group(1), flags=re.M)
        unknown = [n for n in names if n not in species]
        if unknown:
            result.notes.append(f"constant/initialConditions: {', '.join(unknown)} not in the mechanism "
                                f"({' '.join(species)})")


def _sub_entry(text: str, block: str, key: str) -> str | None:
    match = re.search(rf"{re.escape(block)}\s*\{{(.*?)\}}", strip_comments(text), flags=re.S)
    return entry(match.group(1), key) if match else None
