"""Errors the service answers with a status code and a JSON body ``{"error": "<one line>"}``.

:class:`mechanisms.errors.InputError` from the domain code becomes a 422; the classes here carry
their own status (and headers, e.g. ``Retry-After`` or ``WWW-Authenticate``).
"""

from __future__ import annotations

from mechanisms.errors import DeepkinError


class ServiceError(DeepkinError):
    """An error with an HTTP status; the message is one line meant for the client."""

    status_code = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="deepkin"'})


class Forbidden(ServiceError):
    status_code = 403


class UnknownModel(ServiceError):
    status_code = 404


class MechanismMismatch(ServiceError):
    """The client's mechanism sha256 or species order differs from the model's."""

    status_code = 409


class BodyTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class QueueFull(ServiceError):
    status_code = 503

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class ShuttingDown(ServiceError):
    status_code = 503


class NotReady(ServiceError):
    """The readiness probe's answer while starting, shutting down or wedged."""

    status_code = 503
