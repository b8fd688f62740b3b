"""Package-level public names imported on first use (PEP 562 ``__getattr__``).

A package's ``__init__`` lists its public API as ``{name: home module}``; ``import package`` then
stays cheap (no Cantera, torch, h5py or Dask until a name is used) and the package's own modules can
import each other without cycles through ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in ``homes``' modules."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
