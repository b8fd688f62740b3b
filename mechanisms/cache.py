"""The user's deepkin cache folder: solved flame profiles, reduction references, refinement work.

``$DEEPKIN_CACHE_DIR`` when set, else ``~/.cache/deepkin``. Everything kept there can be rebuilt
(from a committed recipe or a deterministic computation): deleting it costs time, never results.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$DEEPKIN_CACHE_DIR`` or ``~/.cache/deepkin`` (not created here)."""
    root = os.environ.get("DEEPKIN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "deepkin"
