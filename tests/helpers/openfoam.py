"""Shared plumbing of the OpenFOAM tests: the installed OpenFOAM (or a skip/fail naming why), the
built chemistry library, cases written by the real CLI, solver runs with the service's token."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from couplers.openfoam.foam import INSTALL_HINT, FoamError, installed, run_application

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = ROOT / "kinetics" / "shipped"
TOKEN = "openfoam-token"
REQUIRED = bool(os.environ.get("DEEPKIN_REQUIRE_OPENFOAM"))  # set by .ci/run: CI must run these


def require_openfoam() -> None:
    """Skip (or, under DEEPKIN_REQUIRE_OPENFOAM, fail) when OpenFOAM cannot be used here."""
    missing = [tool for tool in ("g++", "make", "mpirun") if shutil.which(tool) is None]
    if not installed() or missing:
        reason = (f"OpenFOAM is not installed ({INSTALL_HINT})" if not installed()
                  else f"{', '.join(missing)} not installed")
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)


def build_library() -> Path:
    """``deepkin openfoam build`` (a no-op when built already); the library's path."""
    from couplers.openfoam.build import BuildError, build

    try:
        return build()
    except BuildError as exc:
        if REQUIRED:
            raise
        pytest.skip(f"cannot build the OpenFOAM chemistry library here: {exc}")


def deepkin(*args: str, timeout: float = 600, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """``deepkin ARGS`` as a subprocess (the real CLI), run in ``cwd`` (default: here)."""
    return subprocess.run([sys.executable, "-m", "deepkin", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def write_case(kind: str, out: Path, *options: str) -> Path:
    """``deepkin openfoam case KIND -o OUT OPTIONS``; fails the test on a non-zero exit."""
    run = deepkin("openfoam", "case", kind, "-o", str(out), *options)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def run_solver(application: str, case: Path, *args: str, ranks: int = 1, token: str = TOKEN,
               timeout_s: float = 600) -> str:
    """Run an OpenFOAM application on the case; its log text."""
    log = case / f"log.{application}"
    run_application(application, case, *args, ranks=ranks, log=log, env={"DEEPKIN_TOKEN": token},
                    timeout_s=timeout_s)
    return log.read_text(errors="replace")


def solver_error(application: str, case: Path, *args: str, token: str = TOKEN) -> str:
    """Run an application that must fail; its FatalError as one line."""
    with pytest.raises(FoamError) as failure:
        run_solver(application, case, *args, token=token, timeout_s=300)
    print(f"FatalError: {failure.value}")
    return str(failure.value)


def set_entry(path: Path, key: str, value: str) -> None:
    """Replace ``key …;`` (its first occurrence) in an OpenFOAM dictionary file."""
    import re

    text = path.read_text()
    new, count = re.subn(rf"^(\s*){re.escape(key)}\s+[^;]*;", rf"\g<1>{key} {value};", text, count=1,
                         flags=re.M)
    assert count == 1, f"{key} not in {path}"
    path.write_text(new)
