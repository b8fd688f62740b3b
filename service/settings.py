"""Service settings: one object, read once (environment ``DEEPKIN_*``, then command-line flags)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kinetics.model.precisions import INFERENCE_PRECISIONS
from mechanisms.errors import InputError

ENV_PREFIX = "DEEPKIN_"


class ServiceSettings(BaseModel):
    """Everything the service reads at start-up; never re-read while it runs. Numbers must be
    finite (``nan`` and ``inf`` are refused like any value out of range)."""

    model_config = ConfigDict(allow_inf_nan=False)

    model_dir: Path | None = Field(None, description="Directory of *.safetensors models (default: shipped)")
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice)")
    precision: Literal[("auto", *INFERENCE_PRECISIONS)] = Field(
        "auto", description="The networks' dtype; auto: a model's validated inference precision "
                            "where the CPU multiplies it natively, else float32")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tokens: list[str] = Field(default_factory=list, description="Bearer tokens; empty = no auth")
    max_body_bytes: int = Field(1 << 30, gt=0, description="Request-size limit (413 above it), "
                                "before and after decompression")
    max_json_bytes: int = Field(16 << 20, gt=0, description="Size limit of a JSON body (v1 JSON, v2 "
                                "without binary data) and of a v2 JSON header, before and after "
                                "decompression (413 above it)")
    max_header_bytes: int = Field(64 << 10, ge=1 << 10, le=1 << 20, description="Size limit of a "
                                  "request line and its headers together (and of a chunked body's "
                                  "framing and trailers), counted while they arrive: 431 above it")
    max_batch_cells: int = Field(1 << 20, gt=0, description="Cell cap of one merged device call")
    max_batch_requests: int = Field(64, gt=0, description="Requests merged into one call; 1 = no merging")
    queue_delay_s: float = Field(0.0, ge=0, description="Wait this long for more requests to merge")
    max_queue_requests: int = Field(256, gt=0, description="Queued requests before 503")
    max_queue_cells: int = Field(1 << 22, gt=0, description="Queued cells before 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of a 503")
    max_substeps: int = Field(1000, gt=0, description="Model steps one request may ask for (dt / the "
                                                      "model's dt); 422 above")
    max_cell_substeps: int = Field(1 << 26, gt=0, description="Cells × model steps of one request; "
                                                              "422 above")
    step_timeout_s: float = Field(60.0, gt=0, description="Device-time budget of one device call (s): "
                                  "stopped at the next model step past it; not ready while a call "
                                  "runs longer")
    header_timeout_s: float = Field(10.0, gt=0, description="A request line and headers must arrive "
                                    "within this (s) of their first byte or of the connection opening")
    body_timeout_s: float = Field(30.0, gt=0, description="Longest pause (s) in a request body or in "
                                  "the client reading its answer; the connection is closed after it")
    keep_alive_s: int = Field(300, gt=0, description="Idle keep-alive of a connection (a CFD rank calls "
                                                     "once per time step, which may be minutes apart)")
    graceful_shutdown_s: float = Field(60.0, ge=2.0, description="SIGTERM/SIGINT: the process exits "
                                       "within this (s); requests unanswered 1 s before it get 503")
    log_level: str = "info"

    @field_validator("tokens")
    @classmethod
    def _no_empty_tokens(cls, tokens: list[str]) -> list[str]:
        return [t for t in (tok.strip() for tok in tokens) if t]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> ServiceSettings:
        """Settings from ``DEEPKIN_<FIELD>`` variables (``DEEPKIN_TOKENS`` comma-separated,
        ``DEEPKIN_TOKENS_FILE`` one token a line), then ``overrides`` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in environ and name != "tokens":
                values[name] = environ[key]
        tokens = [t for t in environ.get(ENV_PREFIX + "TOKENS", "").split(",") if t.strip()]
        tokens_file = environ.get(ENV_PREFIX + "TOKENS_FILE")
        if tokens_file:
            tokens += read_tokens_file(tokens_file)
        if tokens:
            values["tokens"] = tokens
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else None
            if first is None:
                raise InputError(f"settings: {exc}")
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            got = f", got {str(first['input'])[:40]}" if "input" in first and where != "tokens" else ""
            raise InputError(f"{where}: {first['msg']}{got}")


def scaled_size(field: str, value: float | None, unit: int) -> int | None:
    """``value`` units of ``unit`` bytes (a MiB or KiB flag such as ``--max-body-mb``) as whole
    bytes for the setting ``field``, None for None. :class:`InputError` naming ``field`` for
    ``nan`` and ``inf``; the range is the setting's to check."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise InputError(f"{field}: Input should be a finite number, got {value}")
    return int(value * unit)


def read_tokens_file(path: str | Path) -> list[str]:
    """Tokens of a file, one a line (blank lines and ``#`` comments ignored)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"tokens-file: cannot read {path} ({exc.strerror})")
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
