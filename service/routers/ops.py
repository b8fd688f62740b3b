"""Operations: ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import State, require_token

router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])


@router.get("/metrics", response_class=Response)
def metrics(state: State) -> Response:
    """Requests, errors, latency and queue-time histograms, batch sizes, cells/s, fallback cells."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
