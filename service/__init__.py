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

from importlib.metadata import PackageNotFoundError, version

from mechanisms.lazy_exports import lazy_exports

# Imported on first use: `from service import Client` must not load torch, Cantera or FastAPI (the
# client needs numpy and httpx only), and the routers import service_version from this module.
_HOMES = {"Client": "service.client", "ServiceCallError": "service.client",
          "StepReply": "service.client", "create_app": "service.app", "ModelHost": "service.hosting",
          "load_hosts": "service.hosting", "serve": "service.server",
          "ServiceSettings": "service.settings"}
__all__ = [*sorted(_HOMES), "service_version"]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)


def service_version() -> str:
    """The installed deepkin version ("0" when running from a checkout never installed)."""
    try:
        return version("deepkin")
    except PackageNotFoundError:
        return "0"
