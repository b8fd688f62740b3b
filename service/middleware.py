"""Pure ASGI middleware: the request-size limit (413) and per-request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so that request bodies stream through untouched.
"""

from __future__ import annotations

import json
import time

from service.errors import BodyTooLarge
from service.metrics import Metrics


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class ServiceMiddleware:
    """Refuses bodies over ``max_body_bytes`` and records every answered request."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 0}
        limit = self.max_body_bytes

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _send_json(send_recording, 413, f"body: {int(length)} bytes is over the limit "
                                                      f"of {limit} bytes", {"connection": "close"})
                return
            seen = 0

            async def receive_counting():
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise BodyTooLarge(f"body: more than the limit of {limit} bytes")
                return message

            await self.app(scope, receive_counting, send_recording)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "(unmatched)"
            self.metrics.request(name, scope.get("method", ""), status["code"] or 499, started)


async def _send_json(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
