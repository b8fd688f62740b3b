"""Bytes on the wire, both ways: every conversion between request/answer bodies and arrays.

Binary states are ``[n, 2+ns]`` little-endian float64 or float32, C order, no header. A body is
read from ``request.stream()`` into one preallocated buffer of ``Content-Length`` bytes (one copy
out of the socket chunks, none afterwards); ``np.frombuffer`` views it without another copy.

- both: :func:`body_media_type` (415 unless octet-stream or JSON), :func:`content_coding` and
  :func:`decompress` (gzip/deflate request bodies, 415 for another coding), :func:`read_body`,
  :func:`json_bytes`.
- v1: :func:`states_from_bytes` / :func:`states_from_lists` in, :func:`states_body` (binary) and
  :func:`json_array` (JSON) out.
- v2 (KServe Open Inference Protocol, binary-data extension): :func:`split_inference_body`
  (``Inference-Header-Content-Length``), :func:`tensor_states` in, :func:`inference_outputs` and
  :func:`inference_body` out.
"""

from __future__ import annotations

import asyncio
import json
import zlib

import numpy as np
from starlette.requests import ClientDisconnect, Request

from mechanisms.errors import InputError
from mechanisms.state import n_species_of
from service.errors import BadRequest, BodyTooLarge, UnsupportedMediaType
from service.schemas import InferInputTensor

DTYPES = {
    "float64": np.dtype("<f8"), "f8": np.dtype("<f8"), "<f8": np.dtype("<f8"), "fp64": np.dtype("<f8"),
    "double": np.dtype("<f8"),
    "float32": np.dtype("<f4"), "f4": np.dtype("<f4"), "<f4": np.dtype("<f4"), "fp32": np.dtype("<f4"),
    "float": np.dtype("<f4"),
}
DTYPE_NAMES = {np.dtype("<f8"): "float64", np.dtype("<f4"): "float32"}
V2_DATATYPES = {"FP64": np.dtype("<f8"), "FP32": np.dtype("<f4")}  # KServe v2 tensor datatypes
BODY_MEDIA_TYPES = ("application/octet-stream", "application/json", "")  # "": no Content-Type
CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # zlib wbits of each coding
INFLATE_CHUNK = 4 << 20  # bytes inflated per zlib call: the size limit is checked in between


class Disconnected(Exception):
    """The client went away before its body arrived in full."""


def parse_dtype(text: str | None, field: str = "X-Dtype") -> np.dtype:
    """``float64`` (default) or ``float32`` (also f8/f4, fp64/fp32, double/float)."""
    if text is None or not text.strip():
        return np.dtype("<f8")
    dtype = DTYPES.get(text.strip().lower())
    if dtype is None:
        raise InputError(f"{field}: unknown dtype '{text.strip()[:40]}' (use float64 or float32)")
    return dtype


def body_media_type(request: Request) -> str:
    """The body's media type, lower case without parameters ("" without ``Content-Type``);
    :class:`UnsupportedMediaType` (415) unless it is octet-stream or JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in BODY_MEDIA_TYPES:
        raise UnsupportedMediaType(f"content-type: '{media[:60]}' is neither application/octet-stream "
                                   "nor application/json")
    return media


def content_coding(request: Request) -> str | None:
    """``gzip`` or ``deflate`` from ``Content-Encoding`` (None without one, or ``identity``);
    :class:`UnsupportedMediaType` (415) for another coding, before any of the body is read."""
    text = request.headers.get("content-encoding")
    if text is None or text.strip().lower() in ("", "identity"):
        return None
    coding = text.strip().lower()
    if coding not in CODINGS:
        raise UnsupportedMediaType(f"content-encoding: '{text.strip()[:40]}' is not supported "
                                   f"(gzip, deflate)")
    return coding


async def read_body(request: Request, max_bytes: int, for_json: bool = False) -> memoryview:
    """The whole body as a writable buffer.

    With ``Content-Length`` the buffer is allocated once and the socket chunks are copied into it
    (numpy memory, untouched until written; a ``bytearray`` when ``for_json``, which pydantic
    reads without a copy, see :func:`json_bytes`); a chunked body grows one ``bytearray``. Raises
    :class:`BodyTooLarge` past ``max_bytes`` (before reading when ``Content-Length`` says so; the
    answer closes the connection) and :class:`Disconnected` when the client leaves mid-body.
    """
    length_text = request.headers.get("content-length")
    try:
        if length_text is not None:
            length = int(length_text)
            if length > max_bytes:
                raise BodyTooLarge(f"body: {length} bytes is over the limit of {max_bytes} bytes",
                                   {"Connection": "close"})
            view = memoryview(bytearray(length) if for_json else np.empty(length, dtype=np.uint8))
            pos = 0
            async for chunk in request.stream():
                end = pos + len(chunk)
                if end > length:
                    raise BadRequest("body: longer than its Content-Length")
                view[pos:end] = chunk
                pos = end
            if pos != length:
                raise Disconnected()
            return view
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > max_bytes:
                raise BodyTooLarge(f"body: more than the limit of {max_bytes} bytes", {"Connection": "close"})
        return memoryview(buffer)
    except ClientDisconnect:
        raise Disconnected()


def json_bytes(body: memoryview) -> bytes | bytearray:
    """``body`` as pydantic's ``model_validate_json`` takes it: the ``bytearray`` under it when
    the view spans one whole (no copy), else a copy."""
    under = body.obj
    if isinstance(under, (bytes, bytearray)) and len(under) == body.nbytes:
        return under
    return body.tobytes()


async def decompress(body: memoryview, coding: str | None, max_bytes: int) -> memoryview:
    """Undo ``coding`` (:func:`content_coding`; None: ``body`` itself) off the event loop (zlib
    lets go of the GIL), so other clients are served meanwhile; see :func:`inflate`."""
    if coding is None:
        return body
    return await asyncio.to_thread(inflate, body, coding, max_bytes)


def inflate(body: memoryview, coding: str, max_bytes: int) -> memoryview:
    """``body`` inflated from ``coding`` (gzip or deflate), :data:`INFLATE_CHUNK` bytes per zlib
    call, stopping with :class:`BodyTooLarge` as soon as it passes ``max_bytes`` (a small body
    that inflates to gigabytes costs ``max_bytes`` at most). BadRequest for data that is not one
    valid ``coding`` stream.

    The output buffer is numpy memory sized from gzip's length trailer (a hint, capped at
    ``max_bytes``) and doubled when too small: a buffer of tens of MiB is then mapped on its own
    and given back when freed, where a growing ``bytearray`` would stay in the malloc heap, which
    this server never trims (service.server.MALLOC_SETTINGS).
    """
    inflater = zlib.decompressobj(CODINGS[coding])
    hint = int.from_bytes(body[-4:], "little") if coding == "gzip" and len(body) >= 18 else 0
    out = np.empty(min(max(hint, INFLATE_CHUNK), max_bytes), dtype=np.uint8)
    size = 0
    data: memoryview | bytes = body
    try:
        while True:
            piece = inflater.decompress(data, INFLATE_CHUNK)
            end = size + len(piece)
            if end > max_bytes:
                raise BodyTooLarge(f"body: more than the limit of {max_bytes} bytes once decompressed",
                                   {"Connection": "close"})
            if end > len(out):
                grown = np.empty(min(max(2 * len(out), end), max_bytes), dtype=np.uint8)
                grown[:size] = out[:size]
                out = grown
            out[size:end] = np.frombuffer(piece, dtype=np.uint8)
            size = end
            data = inflater.unconsumed_tail
            if not data and len(piece) < INFLATE_CHUNK:
                break
    except zlib.error as exc:
        raise BadRequest(f"content-encoding: the body is not valid {coding} data ({exc})")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"content-encoding: the body is not one complete {coding} stream")
    return memoryview(out)[:size]


def states_from_bytes(body: memoryview, dtype: np.dtype, width: int, cells: str | None = None) -> np.ndarray:
    """View ``body`` as ``[n, width]`` of ``dtype``; InputError when the length does not fit."""
    row_bytes = width * dtype.itemsize
    if len(body) % row_bytes:
        raise InputError(f"states: body of {len(body)} bytes is not a whole number of rows of {width} "
                         f"{DTYPE_NAMES[dtype]} values ({row_bytes} bytes each; T, P and "
                         f"{n_species_of(width)} mass fractions)")
    n = len(body) // row_bytes
    if cells is not None and cells.strip():
        if not cells.strip().isdigit() or int(cells) != n:
            raise InputError(f"X-Cells: header says {cells.strip()[:20]} cells, the body holds {n}")
    return np.frombuffer(body, dtype=dtype).reshape(n, width)


def states_from_lists(rows, width: int, dtype: np.dtype, field: str = "states") -> np.ndarray:
    """``[n, width]`` array from nested JSON lists (or a flat list when ``shape`` is known)."""
    try:
        array = np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{field}: not a rectangular array of numbers")
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, width)
    if array.ndim != 2 or array.shape[1] != width:
        raise InputError(f"{field}: expected shape [n, {width}] (T, P and {n_species_of(width)} mass "
                         f"fractions), got {list(array.shape)}")
    return array


def split_inference_body(body: memoryview, header_length: str | None, max_json_bytes: int
                         ) -> tuple[bytes | bytearray, memoryview]:
    """A v2 body as ``(JSON header, binary tensor data)``: the first ``header_length`` bytes (the
    ``Inference-Header-Content-Length`` header; without it the whole body is JSON, not copied),
    then the rest. :class:`BodyTooLarge` for a JSON header over ``max_json_bytes``."""
    if header_length is None:
        return json_bytes(body), body[len(body):]
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise BadRequest(f"Inference-Header-Content-Length: '{header_length[:20]}' is not a length "
                         f"within the body ({len(body)} bytes)")
    n = int(header_length)
    if n > max_json_bytes:
        raise BodyTooLarge(f"Inference-Header-Content-Length: a JSON header of {n} bytes is over the "
                           f"limit of {max_json_bytes} bytes (max_json_bytes)")
    return body[:n].tobytes(), body[n:]


def tensor_states(tensor: InferInputTensor, binary: memoryview, width: int) -> np.ndarray:
    """``[n, width]`` states of the one v2 input tensor: FP64 or FP32, its ``data`` or, with
    ``parameters.binary_data_size``, the ``binary`` bytes after the JSON header (viewed, not
    copied), which must be exactly that many. InputError names the field that does not fit;
    :class:`BadRequest` (400) an input with both ``data`` and binary data, and binary bytes that
    no input declares (beyond ``binary_data_size``, or with none)."""
    field = f"inputs.{tensor.name[:40]}"
    dtype = V2_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InputError(f"{field}.datatype: '{tensor.datatype[:20]}' is not FP64 or FP32")
    if len(tensor.shape) != 2 or tensor.shape[1] != width or tensor.shape[0] < 0:
        raise InputError(f"{field}.shape: expected [n, {width}], got {tensor.shape[:4]}")
    n = tensor.shape[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None and tensor.data is not None:
        raise BadRequest(f"{field}: both data and parameters.binary_data_size given; send the "
                         "values one way")
    if size is not None:
        if (isinstance(size, bool) or not isinstance(size, int) or size != n * width * dtype.itemsize
                or size > len(binary)):
            raise InputError(f"{field}.parameters.binary_data_size: {size} does not match shape "
                             f"{tensor.shape} of {tensor.datatype} within the {len(binary)} binary bytes")
        if len(binary) > size:
            raise BadRequest(f"{field}.parameters.binary_data_size: {size} bytes declared, but the body "
                             f"holds {len(binary)} bytes of binary data after its JSON header")
        return np.frombuffer(binary, dtype=dtype).reshape(n, width)
    if len(binary):
        raise BadRequest(f"{field}: the body holds {len(binary)} bytes of binary data after its JSON "
                         "header, but the input declares none (parameters.binary_data_size)")
    if tensor.data is None:
        raise InputError(f"{field}: neither data nor binary_data_size given")
    try:
        flat = np.asarray(tensor.data, dtype=dtype).reshape(n, width)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{field}.data: not {n}×{width} numbers")
    return states_from_lists(flat, width, dtype, f"{field}.data")


def states_body(states: np.ndarray, outputs: dict[str, np.ndarray]
                ) -> tuple[bytes | memoryview, dict[str, str]]:
    """A binary step answer: the states' bytes (a view, no copy, when there are no outputs), then
    each output's bytes in order; and the ``X-Dtype`` and ``X-Outputs`` headers naming them."""
    states = np.ascontiguousarray(states)
    if outputs:
        content = b"".join([states.tobytes(), *(np.ascontiguousarray(a).tobytes()
                                                for a in outputs.values())])
    else:
        content = memoryview(states.reshape(-1).view(np.uint8))  # 1-D bytes view, even for 0 cells
    headers = {"X-Dtype": "float32" if states.dtype == np.float32 else "float64",
               "X-Outputs": ",".join(outputs)}
    return content, headers


def inference_outputs(arrays: dict[str, np.ndarray], binary: dict[str, bool]
                      ) -> tuple[list[dict], list[bytes]]:
    """The ``outputs`` entries of a v2 answer, one per array (FP32 for float32, else FP64), and
    the binary blobs that follow the JSON header: an array goes as JSON ``data`` or, where
    ``binary`` says so, as bytes (``parameters.binary_data_size``)."""
    entries, blobs = [], []
    for name, array in arrays.items():
        entry = {"name": name, "shape": list(array.shape),
                 "datatype": "FP32" if array.dtype == np.float32 else "FP64"}
        if binary[name]:
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = json_array(array.ravel())
        entries.append(entry)
    return entries, blobs


def inference_body(payload: dict, blobs: list[bytes]) -> tuple[bytes, str, dict[str, str]]:
    """A v2 answer as ``(body, media type, headers)``: the JSON ``payload``, then any binary
    ``blobs`` (with ``Inference-Header-Content-Length`` giving the JSON's length)."""
    head = json.dumps(payload).encode()
    if not blobs:
        return head, "application/json", {}
    return (b"".join([head, *blobs]), "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(head))})


def json_array(array: np.ndarray) -> list:
    """Nested lists for JSON; non-finite values become null (JSON has no NaN)."""
    if array.size and not np.isfinite(array).all():
        obj = array.astype(object)
        obj[~np.isfinite(array)] = None
        return obj.tolist()
    return array.tolist()
