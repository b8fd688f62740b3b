"""Bounded load on the service: below capacity, above it (503s), and after; or on a running one.

    nice -n 10 python benchmarks/service_load.py       # a random h2o2 model, 2,000 cells a request
    python benchmarks/service_load.py --model-dir DIR --model h2-air --cells 10000
    python benchmarks/service_load.py --url http://127.0.0.1:8000 --model h2-air --cells 1000 \\
        --clients 8 --duration 10                     # one phase against a service already running

Without ``--url`` it starts its own server on 127.0.0.1 (``service.live_server``) with a
bounded queue, runs three phases and prints throughput and p50/p99 latency of each and the count
of every status. Below capacity there must be no errors; above it only 503s (with Retry-After);
afterwards no errors again. With ``--url`` it keeps ``--clients`` clients posting for
``--duration`` s (at most ``--max-requests``) and prints one such line. The load generator is
``service.load_generator.run_load``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinetics.model.synthetic import write_random_model  # noqa: E402
from service.live_server import LiveServer  # noqa: E402
from service.load_generator import run_load, uniform_states  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="Load this running service (one phase of --clients clients)")
    ap.add_argument("--token", help="Bearer token of the service at --url")
    ap.add_argument("--clients", type=int, default=8, help="Clients of the one phase with --url")
    ap.add_argument("--max-requests", type=int, default=100000, help="Requests at most, with --url")
    ap.add_argument("--model-dir", help="Serve these models (default: a random h2o2 model)")
    ap.add_argument("--model", default="h2")
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=10.0, help="s per phase")
    ap.add_argument("--low", type=int, default=2, help="Clients below capacity")
    ap.add_argument("--high", type=int, default=64, help="Clients above capacity")
    ap.add_argument("--max-queue-requests", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.url:
        return load_running_service(args)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = tmp
            write_random_model(Path(tmp) / "h2.safetensors", "h2o2.yaml", hidden=[400, 400, 400])
        with LiveServer(model_dir, "--max-queue-requests", str(args.max_queue_requests),
                        "--threads", str(args.threads)) as server:
            species = httpx.get(f"{server.url}/v1/models/{args.model}").json()["species"]
            states = uniform_states(species, args.cells)
            ok = True
            for label, clients, must_reject in (("below capacity", args.low, False),
                                                ("above capacity", args.high, True),
                                                ("recovered", args.low, False)):
                report = asyncio.run(run_load(server.url, args.model, states, clients, args.duration, 10**6))
                print(report.line(label), flush=True)
                ok &= report.errors == 0 and report.ok > 0 and (report.rejected > 0) == must_reject
            ok &= server.process.poll() is None
    print("ok" if ok else "FAILED: see the lines above")
    return 0 if ok else 1


def load_running_service(args: argparse.Namespace) -> int:
    """One phase of ``args.clients`` clients against the service at ``args.url``."""
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else None
    species = httpx.get(f"{args.url}/v1/models/{args.model}", headers=auth).json()["species"]
    states = uniform_states(species, args.cells)
    report = asyncio.run(run_load(args.url, args.model, states, args.clients, args.duration,
                                  args.max_requests, args.token))
    print(report.line("load"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
