"""The C/C++ toolchain of the tests that compile the client library: a tool on PATH (or a skip, or
a failure under ``DEEPKIN_REQUIRE_C_EXAMPLE=1``, as .ci/run sets it) and one compiler call."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRED = bool(os.environ.get("DEEPKIN_REQUIRE_C_EXAMPLE"))  # .ci/run: a missing toolchain fails


def need(tool: str) -> str:
    """The path of ``tool``; skip (or fail when REQUIRED) where it is not installed."""
    path = shutil.which(tool)
    if path is None:
        if REQUIRED:
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def build(command: list[str], cwd: Path) -> None:
    """Run one compiler ``command`` in ``cwd``; missing libcurl headers skip unless REQUIRED, any
    other failure fails with the end of the compiler's output."""
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if run.returncode != 0 and "curl/curl.h" in run.stderr and not REQUIRED:
        pytest.skip("no libcurl headers (apt-get install libcurl4-openssl-dev)")
    assert run.returncode == 0, " ".join(command) + "\n" + run.stderr[-4000:]
