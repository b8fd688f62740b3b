"""``/v2``: the KServe Open Inference Protocol v2 (Triton's HTTP API), with the binary extension.

One input ``STATES`` ``[n, 2+ns]`` (FP64 or FP32); outputs ``STATES`` (always) and, when named in
``outputs``, ``NET_PRODUCTION_RATES`` ``[n, ns]`` (kmol/m³/s) and ``HEAT_RELEASE_RATE`` ``[n]``
(W/m³). Request ``parameters``: ``dt`` (s), ``mechanism_sha256``. Response ``parameters``:
``n_frozen``, ``n_fallback``, ``n_substeps``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mechanisms.errors import InputError
from service import service_version
from service.batcher import JobResult
from service.deps import Host, State, require_token, run_step, single_query_values
from service.schemas import (
    ErrorBody,
    InferInputTensor,
    InferParameters,
    InferRequest,
    InferResponse,
    ModelMetadataV2,
    ServerMetadata,
)
from service.wire import (
    body_media_type,
    content_coding,
    decompress,
    inference_body,
    inference_outputs,
    read_body,
    split_inference_body,
    tensor_states,
)

INPUT = "STATES"
OUTPUT_NAMES = {"STATES": None, "NET_PRODUCTION_RATES": "net_production_rates",
                "HEAT_RELEASE_RATE": "heat_release_rate"}
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 408, 409, 413, 415, 422, 503)}

REF = "#/components/schemas/{model}"
BODY_MODELS = (InferRequest,)  # registered in the OpenAPI components by the app
health = APIRouter(prefix="/v2", tags=["v2 health"])
router = APIRouter(prefix="/v2", tags=["v2"],
                   dependencies=[Depends(require_token), Depends(single_query_values)])


@health.get("/health/live")
def live() -> dict:
    """200 while the process serves HTTP."""
    return {"live": True}


@health.get("/health/ready", responses={503: {"model": ErrorBody}})
def ready(state: State) -> dict:
    """200 once every model is loaded and the batchers run; 503 while shutting down and while a
    device call has run longer than ``step_timeout_s`` (a wedged device)."""
    state.check_ready()
    return {"ready": True}


@router.get("", response_model=ServerMetadata, responses=ERRORS)
def server_metadata() -> dict:
    return {"name": "deepkin", "version": service_version(), "extensions": ["binary_tensor_data"]}


@router.get("/models/{name}", response_model=ModelMetadataV2, responses=ERRORS)
def model_metadata(host: Host) -> dict:
    """Tensor names, datatypes and shapes (-1 = any number of cells)."""
    w, ns = host.width, host.meta.n_species
    return {
        "name": host.name, "versions": ["1"], "platform": "deepkin_torch",
        "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, w]}],
        "outputs": [{"name": "STATES", "datatype": "FP64", "shape": [-1, w]},
                    {"name": "NET_PRODUCTION_RATES", "datatype": "FP64", "shape": [-1, ns]},
                    {"name": "HEAT_RELEASE_RATE", "datatype": "FP64", "shape": [-1]}],
        "parameters": {"species": host.species, "dt_s": host.meta.dt_s,
                       "mechanism_sha256": host.meta.mechanism_sha256},
    }


@router.get("/models/{name}/ready", responses=ERRORS)
def model_ready(host: Host, state: State) -> dict:
    state.check_ready()
    return {"name": host.name, "ready": True}


@router.get("/models/{name}/config", responses=ERRORS)
def model_config(host: Host, state: State) -> dict:
    """A Triton-style model configuration (what ``get_model_config`` reads)."""
    s = state.settings
    return {"name": host.name, "platform": "deepkin_torch", "max_batch_size": 0,
            "input": [{"name": INPUT, "data_type": "TYPE_FP64", "dims": [-1, host.width]}],
            "output": [{"name": "STATES", "data_type": "TYPE_FP64", "dims": [-1, host.width]}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(s.queue_delay_s * 1e6),
                                 "max_batch_cells": s.max_batch_cells}}


INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": REF.format(model="InferRequest")}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/models/{name}/infer", openapi_extra=INFER_BODY, response_class=Response,
             responses={200: {"model": InferResponse}, **ERRORS})
async def infer(request: Request, host: Host,
                state: State) -> Response:
    """Advance the ``STATES`` input by ``parameters.dt`` (default: the model's dt).

    A JSON body, or with ``Inference-Header-Content-Length`` a JSON header followed by binary
    tensor data; either may be gzip- or deflate-compressed (``Content-Encoding``).
    """
    body_media_type(request)
    coding = content_coding(request)
    s = state.settings
    header_length = request.headers.get("inference-header-content-length")
    limit = s.max_json_bytes if header_length is None else s.max_body_bytes
    body = await decompress(await read_body(request, limit, for_json=header_length is None), coding, limit)
    head, binary = split_inference_body(body, header_length, s.max_json_bytes)
    req = InferRequest.model_validate_json(head)
    params = req.parameters or InferParameters()
    host.check_client(params.mechanism_sha256)
    n_substeps = host.substeps(params.dt)
    states = tensor_states(_states_input(req), binary, host.width)
    wanted, binary_outputs = _requested_outputs(req)
    result = await run_step(request, state, host, states, n_substeps,
                            tuple(OUTPUT_NAMES[n] for n in wanted if OUTPUT_NAMES[n]))
    return _answer(host.name, req.id, result, wanted, binary_outputs)


def _answer(model: str, request_id: str | None, result: JobResult, wanted: list[str],
            binary: dict[str, bool]) -> Response:
    """The inference response: the ``wanted`` outputs (JSON or binary each) and the counts."""
    arrays = {n: result.states if n == "STATES" else result.outputs[OUTPUT_NAMES[n]] for n in wanted}
    outputs, blobs = inference_outputs(arrays, binary)
    payload = {"model_name": model, "model_version": "1", "outputs": outputs,
               "parameters": {"n_frozen": result.n_frozen, "n_fallback": result.n_fallback,
                              "n_substeps": result.n_substeps}}
    if request_id is not None:
        payload["id"] = request_id
    content, media_type, headers = inference_body(payload, blobs)
    return Response(content, media_type=media_type, headers=headers)


def _states_input(req: InferRequest) -> InferInputTensor:
    """The one input tensor, named ``STATES``; InputError otherwise."""
    if len(req.inputs) != 1 or req.inputs[0].name != INPUT:
        names = ", ".join(t.name[:40] for t in req.inputs) or "none"
        raise InputError(f"inputs: expected one input named {INPUT}, got {names}")
    return req.inputs[0]


def _requested_outputs(req: InferRequest) -> tuple[list[str], dict[str, bool]]:
    """Output names in answer order and whether each goes binary."""
    default_binary = bool(req.parameters and req.parameters.binary_data_output)
    if not req.outputs:
        return ["STATES"], {"STATES": default_binary}
    wanted, binary = [], {}
    for out in req.outputs:
        if out.name not in OUTPUT_NAMES:
            raise InputError(f"outputs: unknown output '{out.name[:40]}' (known: {', '.join(OUTPUT_NAMES)})")
        wanted.append(out.name)
        flag = out.parameters.binary_data if out.parameters else None
        binary[out.name] = default_binary if flag is None else flag
    return list(dict.fromkeys(wanted)), binary
