"""``/v1``: model facts and the chemistry step (binary or JSON)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from service.batcher import JobResult
from service.deps import Host, State, require_token, run_step, single_query_values
from service.hosting import ModelHost, parse_outputs
from service.schemas import ErrorBody, ModelInfo, ModelList, StepRequest, StepResponse
from service.wire import (
    DTYPES,
    body_media_type,
    content_coding,
    decompress,
    json_array,
    json_bytes,
    parse_dtype,
    read_body,
    states_body,
    states_from_bytes,
    states_from_lists,
)

REF = "#/components/schemas/{model}"
BODY_MODELS = (StepRequest, StepResponse)  # registered in the OpenAPI components by the app
router = APIRouter(prefix="/v1", tags=["v1"],
                   dependencies=[Depends(require_token), Depends(single_query_values)])

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 408, 409, 413, 415, 422, 503)}

STEP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary",
                           "description": "[n, 2+ns] little-endian float64 (or float32 with "
                                          "X-Dtype: float32), C order: T (K), P (Pa), Y..."}},
            "application/json": {"schema": {"$ref": REF.format(model="StepRequest")}},
        },
    },
    "parameters": [
        {"name": "X-Dtype", "in": "header", "required": False,
         "schema": {"type": "string", "enum": ["float64", "float32"]},
         "description": "dtype of a binary body (default float64); the answer has the same"},
        {"name": "X-Mechanism-SHA256", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "409 unless it is the model's mechanism sha256"},
        {"name": "X-Cells", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Optional check of the number of cells in a binary body"},
        {"name": "Content-Encoding", "in": "header", "required": False,
         "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
         "description": "A compressed body (415 for another coding)"},
    ],
}
STEP_RESPONSES = {
    200: {"description": "Advanced states in the request's layout (binary: the same bytes layout, then "
                         "any outputs named in X-Outputs in that order; counts in X-* headers)",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                      "application/json": {"schema": {"$ref": REF.format(model="StepResponse")}}}},
    **ERRORS,
}


@router.get("/models", response_model=ModelList, responses=ERRORS)
def list_models(state: State) -> dict:
    """Every served model with its species order, dt, training domain and mechanism sha256."""
    return {"models": [host.info() for host in state.hosts.values()]}


@router.get("/models/{name}", response_model=ModelInfo, responses=ERRORS)
def get_model(host: Host) -> dict:
    """One model: species order (columns after T and P), dt (s), domain, mechanism sha256."""
    return host.info()


@router.get("/models/{name}/species", response_class=PlainTextResponse, responses=ERRORS)
def get_species(host: Host) -> str:
    """The species order as plain text, one name a line (for C and Fortran clients)."""
    return "".join(f"{name}\n" for name in host.species)


@router.post("/models/{name}/step", openapi_extra=STEP_BODY, responses=STEP_RESPONSES,
             response_class=Response)
async def step(request: Request, host: Host, state: State,
               dt: Annotated[float | None, Query(description="Step (s), a whole multiple of the "
                                                             "model's dt_s")] = None,
               outputs: Annotated[str | None, Query(description="Comma-separated: "
                                                                "net_production_rates, heat_release_rate")
                                  ] = None) -> Response:
    """Advance ``[n, 2+ns]`` states by ``dt`` (default: the model's dt).

    Binary body (``application/octet-stream``, the default) for production calls, JSON for small
    ones; either may be gzip- or deflate-compressed (``Content-Encoding``).
    """
    coding = content_coding(request)
    if body_media_type(request) == "application/json":
        return await _step_json(request, dt, outputs, host, state, coding)
    dtype = parse_dtype(request.headers.get("x-dtype"))
    limit = state.settings.max_body_bytes
    body = await decompress(await read_body(request, limit), coding, limit)
    host.check_client(request.headers.get("x-mechanism-sha256"))
    n_substeps = host.substeps(dt)
    wanted = parse_outputs(outputs)
    states = states_from_bytes(body, dtype, host.width, request.headers.get("x-cells"))
    result = await run_step(request, state, host, states, n_substeps, wanted)
    return binary_response(result)


async def _step_json(request: Request, dt: float | None, outputs: str | None, host: ModelHost,
                     state: State, coding: str | None) -> Response:
    limit = state.settings.max_json_bytes
    body = await decompress(await read_body(request, limit, for_json=True), coding, limit)
    req = StepRequest.model_validate_json(json_bytes(body))
    host.check_client(req.mechanism_sha256, req.species)
    n_substeps = host.substeps(req.dt if req.dt is not None else dt)
    wanted = parse_outputs(list(req.outputs) or outputs)
    states = states_from_lists(req.states, host.width, DTYPES[req.dtype])
    result = await run_step(request, state, host, states, n_substeps, wanted)
    payload = {"states": json_array(result.states), "n_cells": result.n_cells,
               "n_frozen": result.n_frozen, "n_fallback": result.n_fallback,
               "n_substeps": result.n_substeps}
    for key, array in result.outputs.items():
        payload[key] = json_array(array)
    return Response(json.dumps(payload), media_type="application/json", headers=_count_headers(result))


def binary_response(result: JobResult) -> Response:
    """The states' bytes (no copy), then any outputs in ``X-Outputs`` order."""
    content, layout = states_body(result.states, result.outputs)
    return BinaryResponse(content, media_type="application/octet-stream",
                          headers={**_count_headers(result), **layout})


class BinaryResponse(Response):
    """A response whose body may be a memoryview (sent without a copy, whatever Starlette's version)."""

    def render(self, content) -> bytes | memoryview:
        return content


def _count_headers(result: JobResult) -> dict[str, str]:
    return {"X-Cells": str(result.n_cells), "X-Frozen-Cells": str(result.n_frozen),
            "X-Fallback-Cells": str(result.n_fallback), "X-Substeps": str(result.n_substeps),
            "X-Batch-Requests": str(result.batch_requests), "X-Batch-Cells": str(result.batch_cells),
            "X-Queue-Seconds": f"{result.queue_s:.6f}", "X-Device-Seconds": f"{result.device_s:.6f}"}
