"""The chemistry-step service: a REST API over :class:`kinetics.integrator.Integrator`.

``service.app.create_app(settings)`` builds the FastAPI application, ``service.server.serve``
runs it under uvicorn and ``service.client.Client`` talks to it from Python. See docs/service.md.
"""

from importlib.metadata import PackageNotFoundError, version


def service_version() -> str:
    """The installed deepkin version ("0" when running from a checkout never installed)."""
    try:
        return version("deepkin")
    except PackageNotFoundError:
        return "0"
