"""Solved flame profiles are kept across runs (sampling/profile_cache.py): real Cantera flames,
real files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mechanisms import load_mechanism
from mechanisms.dataset_file import read_dataset
from mechanisms.state import ONE_ATM_PA
from sampling.manifold import free_flame_profile
from sampling.profile_cache import cached_profiles, profile_cache_dir, profile_key
from tests.conftest import run_cli


@pytest.fixture
def counted_flame():
    """A real h2o2 free flame solve that counts its calls."""
    gas = load_mechanism("h2o2.yaml").solution()
    gas.set_equivalence_ratio(1.0, "H2:1", "O2:1,N2:3.76")
    y0 = gas.Y.copy()
    calls = []

    def solve():
        calls.append(1)
        return [(0.0, *free_flame_profile(gas, 300.0, ONE_ATM_PA, y0, width_m=0.02))]

    return solve, calls


def test_a_profile_is_solved_once_and_a_damaged_file_again(tmp_path, counted_flame):
    solve, calls = counted_flame
    key = profile_key("free_flame", "sha", {"phi": 1.0}, {"width_m": 0.02})
    first = cached_profiles(key, solve, tmp_path)
    again = cached_profiles(key, solve, tmp_path)
    assert len(calls) == 1 and (tmp_path / f"{key}.npz").is_file()
    for a, b in zip(first[0][1:], again[0][1:]):
        np.testing.assert_array_equal(a, b)
    (tmp_path / f"{key}.npz").write_bytes(b"not a profile")
    third = cached_profiles(key, solve, tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(third[0][2], first[0][2])
    assert cached_profiles(key, solve, tmp_path)[0][2].shape == first[0][2].shape and len(calls) == 2


def test_the_key_holds_what_determines_a_profile():
    base = profile_key("free_flame", "sha", {"pressure_pa": 1e5}, {"width_m": 0.03})
    assert profile_key("free_flame", "sha", {"pressure_pa": 1e5}, {"width_m": 0.03}) == base
    for other in (profile_key("counterflow", "sha", {"pressure_pa": 1e5}, {"width_m": 0.03}),
                  profile_key("free_flame", "other", {"pressure_pa": 1e5}, {"width_m": 0.03}),
                  profile_key("free_flame", "sha", {"pressure_pa": 2e5}, {"width_m": 0.03}),
                  profile_key("free_flame", "sha", {"pressure_pa": 1e5}, {"width_m": 0.02})):
        assert other != base


def test_the_cache_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPKIN_CACHE_DIR", str(tmp_path))
    assert profile_cache_dir() == tmp_path / "profiles"
    monkeypatch.setenv("DEEPKIN_PROFILE_CACHE", "off")
    assert profile_cache_dir() is None


def test_a_second_run_reuses_the_flames_and_writes_the_same_rows(tmp_path):
    """Two `deepkin sample` runs of one flame recipe into two files, the second on the first's
    cached flames: identical rows; the cache holds one file per flame and the second run adds
    none and rewrites none."""
    env_cache = tmp_path / "cache"
    args = ["--mechanism", "h2o2.yaml", "--fuel", "H2:1", "--T0", "1200", "--pressure-atm", "1",
            "--phi", "1", "--rows", "autoignition=50", "--rows", "free_flame=120", "--rows",
            "counterflow=80", "--rows", "multiscale=0", "--rows", "perturbed=0", "--rows", "emcs=0",
            "--rows", "equilibrium=0", "--seed", "3", "--workers", "0", "-q"]
    env = {**os.environ, "DEEPKIN_CACHE_DIR": str(env_cache)}
    for name in ("a.h5", "b.h5"):
        proc = subprocess.run([sys.executable, "-m", "deepkin", "sample", "-o", str(tmp_path / name),
                               *args], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        if name == "a.h5":
            cached = {p: p.stat().st_mtime_ns for p in (env_cache / "profiles").glob("*.npz")}
    assert len(cached) == 3  # one free flame, counterflow flames at the default 100 and 1000 1/s
    assert {p: p.stat().st_mtime_ns for p in (env_cache / "profiles").glob("*.npz")} == cached
    a, b = read_dataset(tmp_path / "a.h5"), read_dataset(tmp_path / "b.h5")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert run_cli("dataset", "info", str(tmp_path / "b.h5")).returncode == 0
