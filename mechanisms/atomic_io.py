"""Atomic, durable file writes: write beside the target, fsync, then ``os.replace``.

A reader never sees half a file, and once a call returns its file survives a crash or power loss:
the data are fsynced before the rename and the folder after it. ``why_not_writable`` checks an
output path before a long run starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def fsync_path(path: str | Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary path in ``path``'s folder, fsync it, move it onto ``path``.

    ``suffix`` is appended to the temporary name for writers that pick a format by extension.
    Any error (a full disk among them) leaves ``path`` as it was and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (no pickled objects) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def why_not_writable(path: str | Path) -> str | None:
    """None when the file ``path`` can be created or written, else the reason (a missing or
    read-only folder, a folder in the way, a read-only file)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if path.exists() and path.is_dir():
        return f"{path} is a directory"
    if not os.access(parent, os.W_OK):
        return f"directory {parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
