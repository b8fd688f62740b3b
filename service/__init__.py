"""The chemistry-step service: a REST API over :class:`kinetics.integrator.Integrator`.

A CFD code posts ``[n, 2+ns]`` states ``[T (K), P (Pa), Y...]`` and gets them back advanced by one
chemistry step (binary or JSON ``/v1``, KServe v2 ``/v2``); requests queued together share one
device call. :func:`create_app` builds the FastAPI application for :class:`ServiceSettings` and
:class:`ModelHost` objects (:func:`load_hosts` loads a model directory), :func:`serve` runs it
under uvicorn (what ``deepkin serve`` does) and :class:`Client` talks to it from Python with numpy
and httpx only. Inside: ``hosting`` (the served models), ``batcher`` (dynamic batching, bounded
work), ``device`` (the one device thread and the budget of its calls), ``wire`` (bytes ↔ arrays),
``protocol`` (read deadlines), ``routers/`` (thin route functions), ``app``, ``server``.
See docs/service.md.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.app import create_app
    from service.client import Client, ServiceCallError, StepReply
    from service.hosting import ModelHost, load_hosts
    from service.server import serve
    from service.settings import ServiceSettings

__all__ = ["Client", "ModelHost", "ServiceCallError", "ServiceSettings", "StepReply", "create_app",
           "load_hosts", "serve", "service_version"]

# Imported on first use: `from service import Client` must not load torch, Cantera or FastAPI (the
# client needs numpy and httpx only), and the routers import service_version from this module.
_HOMES = {"Client": "service.client", "ServiceCallError": "service.client",
          "StepReply": "service.client", "create_app": "service.app", "ModelHost": "service.hosting",
          "load_hosts": "service.hosting", "serve": "service.server",
          "ServiceSettings": "service.settings"}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'service' has no attribute '{name}'")
    return getattr(import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)


def service_version() -> str:
    """The installed deepkin version ("0" when running from a checkout never installed)."""
    try:
        return version("deepkin")
    except PackageNotFoundError:
        return "0"
