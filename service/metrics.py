"""Prometheus metrics of one application (its own registry, so several apps can share a process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.batcher import BatchObserver

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CELL_BUCKETS = tuple(4 ** k for k in range(0, 12))  # 1 … 4,194,304 cells


class Metrics(BatchObserver):
    """Requests, errors, latency, queue time, batch sizes, cells/s, frozen and fallback cells."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("deepkin_requests_total", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.errors = Counter("deepkin_request_errors_total", "HTTP requests answered with status >= 400",
                              ["route", "status"], registry=r)
        self.latency = Histogram("deepkin_request_seconds", "Request latency (s), first byte in to last out",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("deepkin_queue_seconds", "Time a request waited for the device (s)",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.device_time = Histogram("deepkin_device_seconds", "Duration of one device call (s)",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_cells = Histogram("deepkin_batch_cells", "Cells per device call", ["model"],
                                     buckets=CELL_BUCKETS, registry=r)
        self.batch_requests = Histogram("deepkin_batch_requests", "Requests merged into one device call",
                                        ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.cells = Counter("deepkin_cells_total", "Cells advanced", ["model"], registry=r)
        self.frozen = Counter("deepkin_frozen_cells_total", "Cells below the frozen temperature",
                              ["model"], registry=r)
        self.fallback = Counter("deepkin_fallback_cells_total", "Cells stepped by Cantera instead",
                                ["model"], registry=r)
        self.cells_per_s = Gauge("deepkin_cells_per_second", "Cells/s of the latest device call",
                                 ["model"], registry=r)
        self.queued_requests = Gauge("deepkin_queue_requests", "Requests waiting for the device",
                                     ["model"], registry=r)
        self.queued_cells = Gauge("deepkin_queue_cells", "Cells waiting for the device", ["model"],
                                  registry=r)
        self.rejected_total = Counter("deepkin_queue_rejected_total", "Requests refused: 503, queue full",
                                      ["model"], registry=r)
        self.disconnects = Counter("deepkin_client_disconnects_total", "Clients gone before their answer",
                                   ["route"], registry=r)
        self.refusals = Counter("deepkin_connection_refusals_total", "Requests refused while being read, "
                                "before any route (408 timeouts, 431 head over the limit, 400 not HTTP, "
                                "503 drain)", ["status", "reason"], registry=r)

    # -- BatchObserver ---------------------------------------------------------------------------------
    def queue_depth(self, model: str, requests: int, cells: int) -> None:
        self.queued_requests.labels(model).set(requests)
        self.queued_cells.labels(model).set(cells)

    def rejected(self, model: str) -> None:
        self.rejected_total.labels(model).inc()

    def batch(self, model: str, requests: int, cells: int, queue_s: list[float], device_s: float,
              n_frozen: int, n_fallback: int) -> None:
        for q in queue_s:
            self.queue_time.labels(model).observe(q)
        self.device_time.labels(model).observe(device_s)
        if requests:
            self.batch_cells.labels(model).observe(cells)
            self.batch_requests.labels(model).observe(requests)
        self.cells.labels(model).inc(cells)
        self.frozen.labels(model).inc(n_frozen)
        self.fallback.labels(model).inc(n_fallback)
        if device_s > 0:
            self.cells_per_s.labels(model).set(cells / device_s)

    # -- HTTP ------------------------------------------------------------------------------------------
    def request(self, route: str, method: str, status: int, started: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(time.perf_counter() - started)

    def refused(self, status: int, reason: str) -> None:
        """A request refused by the connection's protocol (``service.read_limits``)."""
        self.refusals.labels(str(status), reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
