"""A bounded asyncio load generator for the binary step endpoint (127.0.0.1 use).

``run_load`` keeps ``concurrency`` clients posting the same states until ``duration_s`` has passed
or ``max_requests`` were sent, whichever comes first, and reports throughput, p50/p99 latency of
the answered requests and the count of each status (503 = refused by the full queue)::

    python -m service.loadtest http://127.0.0.1:8000 h2-air --cells 1000 --concurrency 8 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np


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
    """``[cells, 2+ns]`` copies of a stoichiometric H2/air-like state (N2 balance when present)."""
    y = np.zeros(len(species))
    for name, value in (("H2", 0.0285), ("O2", 0.2264), ("N2", 0.7451)):
        if name in species:
            y[species.index(name)] = value
    y /= y.sum() if y.sum() else 1.0
    if not y.any():
        y[-1] = 1.0
    return np.tile(np.r_[temperature_k, 101325.0, y], (cells, 1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Bounded load on a deepkin service (binary step).")
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0, help="s")
    ap.add_argument("--max-requests", type=int, default=100000)
    ap.add_argument("--token")
    args = ap.parse_args(argv)
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else None
    species = httpx.get(f"{args.url}/v1/models/{args.model}", headers=auth).json()["species"]
    states = uniform_states(species, args.cells)
    report = asyncio.run(run_load(args.url, args.model, states, args.concurrency, args.duration,
                                  args.max_requests, args.token))
    print(report.line("load"))


if __name__ == "__main__":
    main()
