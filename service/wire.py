"""Bytes on the wire: reading bodies, the binary state layout, JSON arrays.

Binary states are ``[n, 2+ns]`` little-endian float64 or float32, C order, no header. A body is
read from ``request.stream()`` into one preallocated buffer of ``Content-Length`` bytes (one copy
out of the socket chunks, none afterwards); ``np.frombuffer`` views it without another copy.
"""

from __future__ import annotations

import math

import numpy as np
from starlette.requests import ClientDisconnect, Request

from mechanisms.errors import InputError
from service.errors import BadRequest, BodyTooLarge

DTYPES = {
    "float64": np.dtype("<f8"), "f8": np.dtype("<f8"), "<f8": np.dtype("<f8"), "fp64": np.dtype("<f8"),
    "double": np.dtype("<f8"),
    "float32": np.dtype("<f4"), "f4": np.dtype("<f4"), "<f4": np.dtype("<f4"), "fp32": np.dtype("<f4"),
    "float": np.dtype("<f4"),
}
DTYPE_NAMES = {np.dtype("<f8"): "float64", np.dtype("<f4"): "float32"}


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


def parse_dt(text: str | float | None) -> float | None:
    """A ``dt`` in s from a query parameter or header; InputError when it is not a number."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"dt: not a number: '{str(text)[:40]}'")
    if not math.isfinite(value):
        raise InputError(f"dt: must be finite, got {text}")
    return value


async def read_body(request: Request, max_bytes: int) -> memoryview:
    """The whole body as a writable buffer (uint8 memory owned by numpy).

    With ``Content-Length`` the buffer is allocated once and the socket chunks are copied into it;
    a chunked body is joined at the end. Raises :class:`BodyTooLarge` past ``max_bytes`` and
    :class:`Disconnected` when the client leaves mid-body.
    """
    length_text = request.headers.get("content-length")
    try:
        if length_text is not None:
            length = int(length_text)
            if length > max_bytes:
                raise BodyTooLarge(f"body: {length} bytes is over the limit of {max_bytes} bytes")
            buffer = np.empty(length, dtype=np.uint8)
            view = memoryview(buffer)
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
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise BodyTooLarge(f"body: more than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return memoryview(np.frombuffer(bytearray(b"".join(chunks)), dtype=np.uint8))
    except ClientDisconnect:
        raise Disconnected()


def states_from_bytes(body: memoryview, dtype: np.dtype, width: int, cells: str | None = None) -> np.ndarray:
    """View ``body`` as ``[n, width]`` of ``dtype``; InputError when the length does not fit."""
    row_bytes = width * dtype.itemsize
    if len(body) % row_bytes:
        raise InputError(f"states: body of {len(body)} bytes is not a whole number of rows of {width} "
                         f"{DTYPE_NAMES[dtype]} values ({row_bytes} bytes each; T, P and "
                         f"{width - 2} mass fractions)")
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
        raise InputError(f"{field}: expected shape [n, {width}] (T, P and {width - 2} mass fractions), "
                         f"got {list(array.shape)}")
    return array


def json_array(array: np.ndarray) -> list:
    """Nested lists for JSON; non-finite values become null (JSON has no NaN)."""
    if array.size and not np.isfinite(array).all():
        obj = array.astype(object)
        obj[~np.isfinite(array)] = None
        return obj.tolist()
    return array.tolist()
