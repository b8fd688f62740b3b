"""A header flood beside real steps: does a server under a flood of never-ending headers still
answer its normal clients, and within what memory?

- :class:`HeaderFlood`: clients (processes of their own) that each open a request and stream one
  header line without end, as fast as the socket takes it, reconnecting whenever the server closes;
- :class:`MemoryWatch`: the largest resident memory of a process while it runs;
  :func:`memory_of`: resident and peak resident memory of a process (Linux ``/proc``);
  :func:`cpu_seconds_of`: its CPU time so far;
- :func:`steps_beside_flood`: 1-cell steps (:func:`service.load_generator.run_load`) timed
  without, then beside, such a flood (:class:`FloodReport`).

``benchmarks/header_flood.py`` prints it; ``tests/test_service_hostile.py`` asserts on it.
Linux only (``/proc``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.load_generator import LoadReport, run_load, uniform_states


def memory_of(pid: int) -> tuple[int, int]:
    """``(resident, peak resident)`` bytes of process ``pid`` (VmRSS, VmHWM of /proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


FLOOD_HEAD = b"POST /v1/models/h2/step HTTP/1.1\r\nHost: x\r\nX-Flood: "  # then a header without end


def flood_headers(url: str, stop, connections, sent_bytes, nice: int = 0) -> None:
    """One header-flooding client, until ``stop`` (a multiprocessing Event) is set: open a
    connection, send a request line and the start of a header, then 64 KiB chunks of that header
    as fast as the socket takes them; when the server closes the connection, open another.
    ``connections`` and ``sent_bytes`` (multiprocessing Values) count what it did; ``nice``
    lowers its own CPU priority (an attacker on another machine takes none of the server's)."""
    if nice:
        os.nice(nice)
    host, port = url.removeprefix("http://").split(":")
    chunk = b"a" * 65536
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, int(port)), timeout=1.0)
        except OSError:
            time.sleep(0.01)
            continue
        with connections.get_lock():
            connections.value += 1
        sent = 0
        try:
            sock.sendall(FLOOD_HEAD)
            while not stop.is_set():
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # closed by the server (or its send buffer full for a second): open another
        finally:
            sock.close()
            with sent_bytes.get_lock():
                sent_bytes.value += sent


class HeaderFlood:
    """``clients`` header-flooding clients (:func:`flood_headers`), each in a process of its own so
    that they share no interpreter with the clients being measured (``nice``: their CPU priority,
    see there); a context manager. ``connections`` and ``sent_bytes`` say what they did."""

    def __init__(self, url: str, clients: int = 3, nice: int = 0):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._connections = ctx.Value("q", 0)
        self._sent = ctx.Value("q", 0)
        self._processes = [ctx.Process(target=flood_headers, daemon=True,
                                       args=(url, self._stop, self._connections, self._sent, nice))
                           for _ in range(clients)]

    @property
    def connections(self) -> int:
        return self._connections.value

    @property
    def sent_bytes(self) -> int:
        return self._sent.value

    def __enter__(self) -> HeaderFlood:
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + 30.0
        while self.connections < len(self._processes) and time.monotonic() < deadline:
            if not all(process.is_alive() for process in self._processes):
                self.__exit__()
                raise RuntimeError("a header-flooding client ended before it started flooding")
            time.sleep(0.05)  # every client under way (spawning takes a moment)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(10.0)
            if process.is_alive():
                process.kill()
                process.join()


class MemoryWatch:
    """The largest resident memory (bytes) of process ``pid`` over the ``with`` block, sampled
    every ``every_s``; ``before`` is its resident memory at the start."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.pid, self.every_s = pid, every_s
        self.before = self.highest = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @property
    def growth(self) -> int:
        return self.highest - self.before

    def _watch(self) -> None:
        while not self._done.wait(self.every_s):
            self.highest = max(self.highest, memory_of(self.pid)[0])

    def __enter__(self) -> MemoryWatch:
        self.before = self.highest = memory_of(self.pid)[0]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.highest = max(self.highest, memory_of(self.pid)[0])


@dataclass
class FloodReport:
    """What :func:`steps_beside_flood` measured: the normal clients' steps without the flood
    (``quiet``) and beside it (``flooded``), what the flood did, and the server's memory."""

    quiet: LoadReport
    flooded: LoadReport
    flooders: int
    connections: int
    sent_bytes: int
    rss_before: int
    rss_growth: int  # the highest resident memory during the flood, less that before it
    server_cpu_s: tuple[float, float]  # the server's CPU time (s) over each phase

    def lines(self) -> list[str]:
        return [self.quiet.line("quiet"), self.flooded.line(f"{self.flooders} flooders"),
                f"flood: {self.connections} connections, {self.sent_bytes / 2**20:.0f} MiB of header "
                f"sent; server RSS {self.rss_before / 2**20:.0f} MiB before, "
                f"{self.rss_growth / 2**20:+.1f} MiB at most during the flood",
                f"server CPU: {self.server_cpu_s[0]:.1f} s quiet, {self.server_cpu_s[1]:.1f} s beside the "
                f"flood ({self.quiet.duration_s:.0f} s and {self.flooded.duration_s:.0f} s of wall time)"]


def steps_beside_flood(url: str, pid: int, model: str, species: list[str], flooders: int = 3,
                       clients: int = 2, duration_s: float = 10.0, token: str | None = None,
                       nice: int = 0) -> FloodReport:
    """``clients`` clients post 1-cell binary steps to ``model`` for ``duration_s`` (s), then for
    as long again beside ``flooders`` :class:`HeaderFlood` clients (at CPU priority ``nice``);
    the server (process ``pid``) is watched for memory and CPU time meanwhile."""
    one_cell = uniform_states(species, 1)

    def load() -> tuple[LoadReport, float]:
        cpu_before = cpu_seconds_of(pid)
        report = asyncio.run(run_load(url, model, one_cell, clients, duration_s, 10**9, token, 60.0))
        return report, cpu_seconds_of(pid) - cpu_before

    quiet, quiet_cpu_s = load()
    with HeaderFlood(url, flooders, nice) as flood, MemoryWatch(pid) as memory:
        flooded, flooded_cpu_s = load()
    return FloodReport(quiet, flooded, flooders, flood.connections, flood.sent_bytes, memory.before,
                       memory.growth, (quiet_cpu_s, flooded_cpu_s))


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time (s) of process ``pid`` so far (its threads together; /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
