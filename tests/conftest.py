"""Shared fixtures: real CLI subprocesses, real Cantera, real HDF5 files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DEEPKIN = [sys.executable, "-m", "deepkin"]

# The tests' own cache folder (solved flame profiles, reduction references, refinement work):
# shared by the session's tests and CLI subprocesses, never the user's ~/.cache/deepkin.
os.environ.setdefault("DEEPKIN_CACHE_DIR", tempfile.mkdtemp(prefix="deepkin-test-cache-"))

# A small h2o2 run: every source, three T0, two pressures, three φ.
SMALL_ROWS = ["--rows", "autoignition=1200", "--rows", "free_flame=150", "--rows", "counterflow=150",
              "--rows", "multiscale=2400", "--rows", "perturbed=600", "--rows", "emcs=400",
              "--rows", "equilibrium=300"]
SMALL_CASES = ["--mechanism", "h2o2.yaml", "--fuel", "H2:1", "--oxidizer", "O2:1,N2:3.76",
               "--T0", "1000,1200,1400", "--pressure-atm", "1,5", "--phi", "0.5,1,2"]


def run_cli(*args: str, timeout: float = 600, check: bool = False, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``deepkin ARGS`` as a subprocess and capture its output."""
    proc = subprocess.run([*DEEPKIN, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"deepkin {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A few thousand labelled h2o2 rows from every source, sampled by 2 Dask worker processes."""
    out = tmp_path_factory.mktemp("data") / "h2-small.h5"
    run_cli("sample", "-o", str(out), *SMALL_CASES, *SMALL_ROWS, "--seed", "7", "--workers", "2",
            "-q", check=True)
    return out


@pytest.fixture(scope="session")
def h2_models(tmp_path_factory) -> Path:
    """A folder holding one small random-weight h2o2 model, ``h2.safetensors``."""
    from tests.helpers.models import write_test_model

    d = tmp_path_factory.mktemp("h2-models")
    write_test_model(d / "h2.safetensors")
    return d


@pytest.fixture(scope="session")
def h2_server(h2_models):
    """``deepkin serve`` on :func:`h2_models` at 127.0.0.1, bearer token ``SHARED_TOKEN``."""
    from service.live_server import LiveServer
    from tests.helpers import SHARED_TOKEN

    with LiveServer(h2_models, "--token", SHARED_TOKEN) as srv:
        yield srv
