"""Running OpenFOAM applications and writing/reading its files (Debian's ESI OpenFOAM v1912).

Debian installs the solvers in /usr/bin and the libraries in /usr/lib; they run once
``WM_PROJECT_DIR=/usr/share/openfoam`` is set (without it: "Could not find mandatory etc entry
'controlDict'"). Nothing else of OpenFOAM's shell environment is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from mechanisms.errors import DeepkinError, InputError
from mechanisms.processes import die_with_parent

DEBIAN_PROJECT_DIR = Path("/usr/share/openfoam")
INSTALL_HINT = ("apt-get install -y --no-install-recommends openfoam (Debian/Ubuntu; "
                "see docs/openfoam.md)")

HEADER = """/*--------------------------------*- C++ -*----------------------------------*\\
  Written by deepkin for OpenFOAM v1912 (ESI)
\\*---------------------------------------------------------------------------*/
FoamFile
{{
    version     2.0;
    format      ascii;
    class       {cls};
    location    "{location}";
    object      {object};
}}
// * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * //

"""


class FoamError(DeepkinError):
    """An OpenFOAM application failed; the message is its FatalError, one line."""


def project_dir() -> Path:
    """The installed OpenFOAM's project directory (``$WM_PROJECT_DIR`` or Debian's)."""
    env = os.environ.get("WM_PROJECT_DIR")
    if env and (Path(env) / "etc" / "controlDict").is_file():
        return Path(env)
    return DEBIAN_PROJECT_DIR


def installed() -> bool:
    """Whether OpenFOAM's solvers and their etc/ directory are installed."""
    return (project_dir() / "etc" / "controlDict").is_file() and shutil.which("chemFoam") is not None


def require_installed() -> None:
    """InputError naming the install command when OpenFOAM is missing."""
    if not installed():
        raise InputError(f"OpenFOAM: not installed (no chemFoam on PATH or no "
                         f"{project_dir()}/etc/controlDict); {INSTALL_HINT}")


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment in which OpenFOAM applications (serial and ``mpirun``) run."""
    env = {**os.environ, "WM_PROJECT_DIR": str(project_dir())}
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")  # containers lack CMA
    return {**env, **(extra or {})}


def fatal_error(log: str) -> str:
    """The reason of an OpenFOAM FatalError in a log, as one line ('' if there is none)."""
    match = re.search(r"--> FOAM FATAL (?:IO )?ERROR:?\s*(.*?)"
                      r"(?:\n\s*\n|\n\s*From |\nFOAM (?:exiting|aborting))", log, flags=re.S)
    if not match:
        return ""
    return " ".join(match.group(1).split())


def run_application(application: str, case: Path, *args: str, ranks: int = 1, log: Path | None = None,
                    env: dict[str, str] | None = None, timeout_s: float | None = None
                    ) -> subprocess.CompletedProcess:
    """Run ``application -case CASE ARGS`` (on ``ranks`` MPI ranks with ``-parallel``).

    The output goes to ``log`` (default ``CASE/log.APPLICATION``). Raises :class:`FoamError` with
    OpenFOAM's FatalError line when the application fails.
    """
    require_installed()
    case = Path(case)
    command = [application, "-case", str(case), *args]
    if ranks > 1:
        command = ["mpirun", "-np", str(ranks), "--oversubscribe", *command, "-parallel"]
    log = log or case / f"log.{application}"
    with open(log, "w") as fh:
        run = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=run_env(env),
                             timeout=timeout_s, text=True, preexec_fn=die_with_parent)
    if run.returncode != 0:
        text = log.read_text(errors="replace")
        reason = fatal_error(text) or (text.strip().splitlines() or ["no output"])[-1]
        unloaded = re.search(r'Could not load "([^"]*deepkinChemistry[^"]*)"\s*\n(.*)', text)
        if unloaded:  # the cause of "Unknown ... type deepkin": say it, and the fix
            reason += (f" ({unloaded.group(1)} did not load: {unloaded.group(2).strip()}; "
                       "run `deepkin openfoam build`)")
        raise FoamError(f"{application} failed (exit {run.returncode}): {reason} (log: {log})")
    return run


def foam_file(object_name: str, body: str, location: str = "constant", cls: str = "dictionary") -> str:
    """An OpenFOAM file: the FoamFile header, then ``body``."""
    return HEADER.format(cls=cls, location=location, object=object_name) + body.rstrip() + "\n\n" + \
        "// " + "*" * 73 + " //\n"


def write_foam_file(path: Path, body: str, cls: str = "dictionary") -> Path:
    """Write ``body`` with a FoamFile header to ``path`` (location = its parent folder's name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(foam_file(path.name, body, location=path.parent.name, cls=cls))
    return path


def scalar_list(values: np.ndarray) -> str:
    """``nonuniform List<scalar>`` of ``values`` ``[n]`` (full float64 precision)."""
    inner = "\n".join(f"{v:.17g}" for v in np.asarray(values, dtype=float))
    return f"nonuniform List<scalar>\n{len(values)}\n(\n{inner}\n)"


def vector_list(values: np.ndarray) -> str:
    """``nonuniform List<vector>`` of ``values`` ``[n, 3]``."""
    inner = "\n".join(f"({a:.17g} {b:.17g} {c:.17g})" for a, b, c in np.asarray(values, dtype=float))
    return f"nonuniform List<vector>\n{len(values)}\n(\n{inner}\n)"


def entry(text: str, key: str) -> str | None:
    """The value of a top-level ``key value;`` entry of a dictionary's text, or None."""
    match = re.search(rf"^\s*{re.escape(key)}\s+([^;{{}}]+);", strip_comments(text), flags=re.M)
    return match.group(1).strip() if match else None


def strip_comments(text: str) -> str:
    """``text`` without ``//`` and ``/* */`` comments."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def read_internal_field(path: Path) -> np.ndarray:
    """A volScalarField's internal values ``[n]`` from its (ascii) file; a uniform field gives ``[1]``."""
    text = Path(path).read_text(errors="replace")
    match = re.search(r"internalField\s+uniform\s+([^;]+);", text)
    if match:
        return np.array([float(match.group(1))])
    match = re.search(r"internalField\s+nonuniform\s+List<scalar>\s*(\d+)\s*\((.*?)\)\s*;", text, flags=re.S)
    if not match:
        raise InputError(f"{path}: no internalField of scalars")
    values = np.array(match.group(2).split(), dtype=float)
    if len(values) != int(match.group(1)):
        raise InputError(f"{path}: internalField says {match.group(1)} values, holds {len(values)}")
    return values


def time_directories(case: Path, processor: int | None = None) -> list[tuple[float, Path]]:
    """The case's time directories (or ``processorN``'s), sorted by time (s)."""
    root = Path(case) / f"processor{processor}" if processor is not None else Path(case)
    out = []
    for d in root.iterdir():
        if d.is_dir():
            try:
                out.append((float(d.name), d))
            except ValueError:
                continue
    return sorted(out)
