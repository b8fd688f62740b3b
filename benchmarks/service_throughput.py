"""Service throughput: the binary step endpoint against in-process ``Integrator.step`` on the same
states, and the pure transport rate against a raw TCP echo of the same bytes. Ratios are measured
in one run, interleaved, medians of ``--repeats``::

    nice -n 10 python benchmarks/service_throughput.py                       # GRI-sized, 65,536 cells
    python benchmarks/service_throughput.py --hidden 3200,1600,800,400       # DeePCK's GRI size (slow on CPU)
    python benchmarks/service_throughput.py --device cuda --cells 1000000    # on a GPU machine

1. chemistry: a random-weight model of the mechanism (every cell goes through the network),
   in-process ``step`` vs ``POST /v1/models/{m}/step`` (http.client, one preallocated answer buffer);
   the answers must agree bit for bit. Overhead = service / in-process − 1.
2. transport: the same model with a frozen temperature above every cell (no chemistry runs);
   service rate vs a raw TCP echo server in another process (length-prefixed bytes, recv_into a
   preallocated buffer) and vs the in-process frozen ``advance`` (the integrator's own share).
3. the Python client (``service.client``, httpx, chunked upload) on the transport path.

The models are random-weight files (``kinetics.model.synthetic``); the server is ``deepkin serve`` in a
subprocess (``service.live_server.LiveServer``), so run it from a checkout.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinetics.integrator import Integrator  # noqa: E402
from kinetics.model.synthetic import write_random_model  # noqa: E402
from mechanisms.loading import load_mechanism  # noqa: E402
from mechanisms.state import state_of_gas, temperature  # noqa: E402
from service.client import Client  # noqa: E402
from service.live_server import LiveServer, free_port  # noqa: E402
from service.server import tune_malloc  # noqa: E402

ECHO_SERVER = r"""
import socket, struct, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); buf = bytearray(); view = memoryview(buf)
while True:
    head = conn.recv(8, socket.MSG_WAITALL)
    if len(head) < 8: break
    (n,) = struct.unpack("<Q", head)
    if len(buf) < n: buf = bytearray(n); view = memoryview(buf)
    got = 0
    while got < n: got += conn.recv_into(view[got:n], n - got)
    conn.sendall(view[:n])
"""


def post_binary(conn: http.client.HTTPConnection, path: str, states: np.ndarray) -> np.ndarray:
    """POST states, read the answer into one preallocated array."""
    conn.request("POST", path, body=memoryview(states).cast("B"),
                 headers={"Content-Type": "application/octet-stream", "X-Dtype": "float64"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    out = np.empty_like(states)
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = response.readinto(view[got:])
        if not n:
            raise RuntimeError("answer cut short")
        got += n
    return out


def echo_round_trip(sock: socket.socket, payload: memoryview, into: memoryview) -> None:
    sock.sendall(struct.pack("<Q", len(payload)))
    sock.sendall(payload)
    got = 0
    while got < len(into):
        got += sock.recv_into(into[got:], len(into) - got)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def process_cpu_s(pid: int) -> float:
    """User + system CPU time (s) of process ``pid`` (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_timed(fn, server_pid: int | None = None) -> float:
    """CPU seconds ``fn`` costs this process plus (when given) the server process."""
    c0 = time.process_time()
    s0 = process_cpu_s(server_pid) if server_pid else 0.0
    fn()
    server = process_cpu_s(server_pid) - s0 if server_pid else 0.0
    return time.process_time() - c0 + server


def make_states(mechanism: str, cells: int, temperature_k: float) -> np.ndarray:
    gas = load_mechanism(mechanism).solution()
    fuel = "CH4:1,O2:2,N2:7.52" if "CH4" in gas.species_names else "H2:2,O2:1,N2:3.76"
    gas.TPX = temperature_k, 101325.0, fuel
    rng = np.random.default_rng(0)
    states = np.tile(state_of_gas(gas), (cells, 1))
    t_k = temperature(states)  # a view: updated in place
    t_k += rng.uniform(-200, 200, cells)  # distinct cells, all inside the model's domain
    return np.ascontiguousarray(states)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mechanism", default="gri30.yaml")
    ap.add_argument("--hidden", default="400,400,400", help="Hidden layer sizes of the random model")
    ap.add_argument("--cells", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # the server does it too: compare like with like
    hidden = [int(h) for h in args.hidden.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_random_model(d / "chem.safetensors", args.mechanism, hidden=hidden)
        write_random_model(d / "frozen.safetensors", args.mechanism, hidden=hidden,
                           frozen_temperature_k=1e4)
        chem = Integrator.load(d / "chem.safetensors", device=args.device)
        frozen = Integrator.load(d / "frozen.safetensors", device=args.device)
        states = make_states(args.mechanism, args.cells, 1500.0)
        mib = states.nbytes / 2**20
        print(f"{args.mechanism}: {chem.meta.n_species} species, hidden {hidden}, {args.cells} cells "
              f"({mib:.1f} MiB float64), device {args.device}, {args.threads} torch thread(s), "
              f"{args.repeats} repeats")

        with LiveServer(d, "--threads", str(args.threads), "--device", args.device,
                        "--max-body-mb", str(max(1024, 4 * mib))) as server:
            host, port = server.url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=3600)
            # -- 1. chemistry ----------------------------------------------------------------------
            expected = chem.step(states)
            got = post_binary(conn, "/v1/models/chem/step", states)  # warm-up + correctness
            assert np.array_equal(got, expected), "service and in-process step disagree"
            pid = server.process.pid
            t_in, t_svc, c_in, c_svc = [], [], [], []
            for _ in range(args.repeats):
                t_in.append(timed(lambda: c_in.append(cpu_timed(lambda: chem.step(states)))))
                t_svc.append(timed(lambda: c_svc.append(
                    cpu_timed(lambda: post_binary(conn, "/v1/models/chem/step", states), pid))))
            m_in, m_svc = statistics.median(t_in), statistics.median(t_svc)
            print("  wall s, in-process:", " ".join(f"{t:.3f}" for t in t_in), "  service:",
                  " ".join(f"{t:.3f}" for t in t_svc))
            print(f"chemistry  in-process step {m_in * 1e3:9.1f} ms ({args.cells / m_in / 1e6:.3f} M cells/s)"
                  f"   service {m_svc * 1e3:9.1f} ms ({args.cells / m_svc / 1e6:.3f} M cells/s)"
                  f"   overhead (wall) {100 * (m_svc / m_in - 1):+.1f} %")
            cm_in, cm_svc = statistics.median(c_in), statistics.median(c_svc)
            print(f"           CPU time: in-process {cm_in * 1e3:.1f} ms, service (server + client) "
                  f"{cm_svc * 1e3:.1f} ms   overhead (CPU) {100 * (cm_svc / cm_in - 1):+.1f} %")

            # -- 2. transport ----------------------------------------------------------------------
            echo_port = free_port()
            echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)],
                                    stdout=subprocess.PIPE)
            echo.stdout.readline()
            sock = socket.create_connection(("127.0.0.1", echo_port))
            payload = memoryview(states).cast("B")
            into = memoryview(bytearray(states.nbytes))
            cold = make_states(args.mechanism, args.cells, 1500.0)
            post_binary(conn, "/v1/models/frozen/step", cold)
            echo_round_trip(sock, payload, into)
            t_echo, t_frz, t_frz_in, t_client = [], [], [], []
            with Client(server.url) as client:
                client.step("frozen", cold)
                for _ in range(args.repeats):
                    t_echo.append(timed(lambda: echo_round_trip(sock, payload, into)))
                    t_frz.append(timed(lambda: post_binary(conn, "/v1/models/frozen/step", cold)))
                    t_frz_in.append(timed(lambda: frozen.advance(cold)))
                    t_client.append(timed(lambda: client.step("frozen", cold)))
            sock.close()
            echo.terminate()
            conn.close()
            rate = {k: args.cells / statistics.median(v) / 1e6 for k, v in
                    {"echo": t_echo, "service": t_frz, "in-process": t_frz_in, "client": t_client}.items()}
            print(f"transport  raw TCP echo {rate['echo']:.3f} M cells/s   service (frozen cells, "
                  f"http.client) {rate['service']:.3f} M cells/s = "
                  f"{100 * rate['service'] / rate['echo']:.0f} % of raw TCP")
            print(f"           in-process frozen advance alone {rate['in-process']:.3f} M cells/s; "
                  f"service.client (httpx) {rate['client']:.3f} M cells/s = "
                  f"{100 * rate['client'] / rate['service']:.0f} % of http.client")
            t_wire = statistics.median(t_frz) - statistics.median(t_frz_in)
            print(f"           service time less the integrator's frozen pass: "
                  f"{args.cells / max(t_wire, 1e-9) / 1e6:.3f} M cells/s = "
                  f"{100 * statistics.median(t_echo) / max(t_wire, 1e-9):.0f} % of raw TCP")


if __name__ == "__main__":
    main()
