"""Normal 1-cell steps beside clients that stream a request header without end (issue #28).

    python benchmarks/header_flood.py                 # a small random h2o2 model, 3 flooders, 10 s a phase
    python benchmarks/header_flood.py --nice 19       # the flooders at the lowest CPU priority
    python benchmarks/header_flood.py --flooders 1 --duration 5
    python benchmarks/header_flood.py --url http://127.0.0.1:8000 --pid 1234 --model h2-air

Without ``--url`` it starts its own server on 127.0.0.1 (``service.live_server``). In one
run, ``--clients`` clients post 1-cell binary steps for ``--duration`` s, then for as long again
while ``--flooders`` clients (processes of their own) each open a request and send one header line
as fast as the socket takes it, reconnecting whenever the server closes the connection. It prints
p50/p99 latency of the normal steps in both phases, what the flood sent, and how far the server's
resident memory rose over it (``--pid``: the server's process, with ``--url``). ``--nice 19``
stands for an attacker on another machine, whose CPU is not the server's: on a small machine
flooders at normal priority slow the normal clients by taking the cores. The measurement is
``service.header_flood.steps_beside_flood``, which ``tests/test_service_hostile.py`` asserts on;
figures in docs/service.md (Measured).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinetics.model.synthetic import write_random_model  # noqa: E402
from service.header_flood import FloodReport, steps_beside_flood  # noqa: E402
from service.live_server import LiveServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="Measure this running service (then --pid is its process)")
    ap.add_argument("--pid", type=int, help="The process of the service at --url (for its memory)")
    ap.add_argument("--token", help="Bearer token of the service at --url")
    ap.add_argument("--model", default="h2")
    ap.add_argument("--flooders", type=int, default=3)
    ap.add_argument("--clients", type=int, default=2, help="Normal clients posting 1-cell steps")
    ap.add_argument("--duration", type=float, default=10.0, help="s per phase")
    ap.add_argument("--nice", type=int, default=0, help="CPU priority of the flooders (19: an attacker "
                    "on another machine, whose CPU is not the server's)")
    args = ap.parse_args()
    if args.url:
        if args.pid is None:
            ap.error("--url needs --pid (the server's process, for its memory)")
        report = measure(args.url, args.pid, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_random_model(Path(tmp) / "h2.safetensors", "h2o2.yaml", hidden=[32, 32])
            with LiveServer(tmp, "--threads", "1") as server:
                report = measure(server.url, server.process.pid, args)
    for line in report.lines():
        print(line)
    ratio = report.flooded.percentile_ms(99) / report.quiet.percentile_ms(99)
    print(f"p99 beside the flood / quiet: {ratio:.2f}")
    return 0 if report.flooded.ok == report.flooded.sent and report.quiet.ok == report.quiet.sent else 1


def measure(url: str, pid: int, args: argparse.Namespace) -> FloodReport:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    species = httpx.get(f"{url}/v1/models/{args.model}", headers=headers).json()["species"]
    return steps_beside_flood(url, pid, args.model, species, args.flooders, args.clients, args.duration,
                              args.token, args.nice)


if __name__ == "__main__":
    sys.exit(main())
