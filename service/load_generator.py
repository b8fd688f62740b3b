"""A bounded asyncio load generator for the binary step endpoint.

``run_load`` keeps ``concurrency`` clients posting the same states until ``duration_s`` has passed
or ``max_requests`` were sent, whichever comes first, and reports throughput, p50/p99 latency of
the answered requests and the count of each status (503 = refused by the full queue). From the
command line: ``python benchmarks/service_load.py --url URL --model MODEL`` (docs/service.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

from mechanisms.state import ONE_ATM_PA, join_states


@dataclass
class LoadReport:
    concurrency: int
    cells_per_request: int
    sent: int
    duration_s: float
    statuses: dict[int, int] = field(default_factory=dict)  # status → count; 0 = transport error
    latencies_ms: list[float] = field(default_factory=list)  # of the 200s

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rejected(self) -> int:
        return self.statuses.get(503, 0)

    @property
    def errors(self) -> int:
        """Answers that are neither 200 nor 503 (including transport errors)."""
        return self.sent - self.ok - self.rejected

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def line(self, label: str = "") -> str:
        rps = self.ok / self.duration_s if self.duration_s else 0.0
        return (f"{label:<16}{self.concurrency:>4} clients {self.sent:>6} sent {self.ok:>6} ok "
                f"{self.rejected:>5} 503 {self.errors:>3} other  {rps:8.1f} req/s "
                f"{rps * self.cells_per_request / 1e6:7.3f} M cells/s  p50 {self.percentile_ms(50):8.1f} ms "
                f"p99 {self.percentile_ms(99):8.1f} ms")


async def run_load(url: str, model: str, states: np.ndarray, concurrency: int, duration_s: float,
                   max_requests: int, token: str | None = None, timeout_s: float = 60.0) -> LoadReport:
    """Post ``states`` (binary, float64) from ``concurrency`` clients; bounded by time and count."""
    body = np.ascontiguousarray(states, dtype="<f8").tobytes()
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    sent = 0
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v1/models/{model}/step", content=body, headers=headers)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                statuses[status] += 1
                if status == 200:
                    latencies.append((time.perf_counter() - t0) * 1e3)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadReport(concurrency, len(states), sent, elapsed, dict(statuses), latencies)


def uniform_states(species: list[str], cells: int, temperature_k: float = 1200.0) -> np.ndarray:
    """``[cells, 2+ns]`` copies of a stoichiometric H2/air-like state at ``temperature_k`` (K) and
    1 atm (N2 balance when present)."""
    y = np.zeros(len(species))
    for name, value in (("H2", 0.0285), ("O2", 0.2264), ("N2", 0.7451)):
        if name in species:
            y[species.index(name)] = value
    y /= y.sum() if y.sum() else 1.0
    if not y.any():
        y[-1] = 1.0
    return join_states(np.full(cells, temperature_k), np.full(cells, ONE_ATM_PA), np.tile(y, (cells, 1)))
