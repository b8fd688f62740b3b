"""Atomic file writes: write beside the target, then ``os.replace`` (a reader never sees half a file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary path in ``path``'s folder, then move it onto ``path``.

    ``suffix`` is appended to the temporary name for writers that pick a format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (no pickled objects) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
