"""The FastAPI application: routers, error handlers, start-up and graceful shutdown.

``create_app(settings, hosts)``: ``hosts`` maps model names to loaded
:class:`~service.hosting.ModelHost` objects (default: every model of ``settings.model_dir``).
Every error is answered as ``{"error": "<one line>"}`` with its status; bad input is a 4xx, never
a 500.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mechanisms.errors import InputError
from service import service_version
from service.batcher import Batcher
from service.deps import ServiceState
from service.device import Device
from service.errors import ServiceError
from service.hosting import ModelHost, load_hosts
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.routers import ops, v1, v2
from service.settings import ServiceSettings
from service.wire import Disconnected

LAST_DRAIN_S = 0.3  # what the lifespan's end waits for the batchers (s), after uvicorn's drain


def create_app(settings: ServiceSettings | None = None, hosts: dict[str, ModelHost] | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: from the environment) and ``hosts``."""
    settings = settings or ServiceSettings.from_env()
    if hosts is None:
        hosts = load_hosts(settings.model_dir, settings.device, settings.precision)
    metrics = Metrics()
    state = ServiceState(settings=settings, hosts=hosts, batchers={}, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.device = Device(settings.threads, settings.step_timeout_s)
        for name, host in hosts.items():
            state.batchers[name] = Batcher(host, state.device, settings, metrics)
            state.batchers[name].start()
        state.ready = True
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish (server.DrainingServer bounds that wait and
            # answers what is left with 503): nothing is queued any more unless the app runs
            # without it (tests); the device thread is not waited for.
            state.ready = False
            for batcher in state.batchers.values():
                await batcher.stop(LAST_DRAIN_S)
            state.device.close()

    app = FastAPI(title="deepkin chemistry-step service", version=service_version(), lifespan=lifespan,
                  description="Advance `[n, 2+ns]` thermochemical states `[T (K), P (Pa), Y...]` by a "
                              "chemistry step with a DNN surrogate. See docs/service.md.")
    app.state.service = state
    app.include_router(v1.router)
    app.include_router(v2.health)
    app.include_router(v2.router)
    app.include_router(ops.router)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _register_body_schemas(app, [*v1.BODY_MODELS, *v2.BODY_MODELS])
    return app


def _register_body_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the models of bodies parsed by hand (to keep the binary path streaming) to the OpenAPI
    components, so that the spec's ``$ref``s resolve."""
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        spec = default_openapi()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        app.openapi_schema = spec
        return spec

    app.openapi = openapi


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, str(exc), exc.headers)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _first_error(exc.errors()))

    @app.exception_handler(ValidationError)
    async def body_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, _first_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Disconnected)
    async def disconnected(request: Request, exc: Disconnected) -> Response:
        route = getattr(request.scope.get("route"), "path", "(unmatched)")
        request.app.state.service.metrics.disconnects.labels(route).inc()
        return Response(status_code=499)  # nobody reads it; recorded in the metrics as 499


def _first_error(errors: list[dict]) -> str:
    if not errors:
        return "request: invalid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
