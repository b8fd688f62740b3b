"""Service throughput of this checkout against the same service at another git revision, in one run.

    nice -n 10 python benchmarks/service_revisions.py                # against 5b1c2a7^, pre-refactor
    python benchmarks/service_revisions.py --rev HEAD~3 --cells 1000,65536,262144 --repeats 25
    python benchmarks/service_revisions.py --old-tree /tmp/old       # a checkout you already have
    python benchmarks/service_revisions.py --threads 4 --hidden 3200,1600,800,400

What it answers: does the service path lose anything against the earlier revision (the issue asks
that its throughput stay within 5 % of it)? Two ``deepkin serve`` processes run side by side, both on
the same interpreter (this one's venv): "new" is this checkout's working tree, uncommitted changes
included; "old" is ``--rev`` (default ``5b1c2a7^``, the commit before the compiled-step refactor)
checked out with ``git worktree add --detach`` into a temporary folder, removed at the end (also on
an error), or ``--old-tree``. Each server imports its own tree only: ``PYTHONPATH`` is the tree and
``PYTHONSAFEPATH=1`` keeps the caller's folder off ``sys.path`` (a probe checks where ``deepkin``,
``kinetics`` and ``service`` come from before anything is timed; Python 3.11+).

The model is one random-weight file (the mechanism's size, ``--hidden`` layers, every cell goes
through the network) written by the OLD tree's ``write_random_model``, so it is in the older format,
and both servers serve that same file; the script checks that this checkout reads it and that this
checkout's own writer gives the same tensors and metadata (else each server gets its own tree's
file, and the output says so). The states are ``service_throughput.py``'s: the mixture at 1,500 K ±
200 K, distinct cells, all inside the model's domain.

For each ``--cells`` count: ``--warmup`` requests to each server, then ``--repeats`` pairs of
binary ``POST /v1/models/chem/step`` requests (http.client, one kept-alive connection a server),
old and new alternating request by request (old first in even pairs, new first in odd ones), so
that the machine's load falls on both alike. Printed: the median wall seconds of a request on each
side and its cells/s, the ratio new/old of throughput (> 1: this checkout is faster), the 25-75 %
range of the pairs' own ratios (the noise), the servers' mean CPU seconds a request (and old/new:
> 1, this checkout costs less), and whether the two servers' answers agree (max |ΔT|; they should
be equal or within 1e-9 K). Exit status: 0, 1 when the answers disagree by more than
``--tolerance-k``, 2 when the revision does not exist or a server does not start (the end of its
log is printed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.service_throughput import make_states, post_binary, process_cpu_s  # noqa: E402
from kinetics.model.model_file import read_model_file  # noqa: E402
from kinetics.model.synthetic import write_random_model  # noqa: E402
from mechanisms.loading import load_mechanism  # noqa: E402
from mechanisms.state import temperature  # noqa: E402
from service.live_server import LiveServer, ServerStartError  # noqa: E402

DEFAULT_REV = "5b1c2a7^"
MODEL = "chem"

# Run in a tree's own environment: writes the random model with that tree's writer (its home moved
# in the refactor) and says where the packages were imported from.
WRITE_MODEL = r"""
import json, sys
try:
    from kinetics.model.synthetic import write_random_model
except ImportError:
    from kinetics.synthetic import write_random_model
import deepkin, kinetics, service
write_random_model(sys.argv[1], sys.argv[2], hidden=[int(h) for h in sys.argv[3].split(",")])
print(json.dumps({m.__name__: m.__file__ for m in (deepkin, kinetics, service)}))
"""


class BenchmarkError(Exception):
    """A setup failure: printed as one ``error:`` line (with any log below it), exit 2."""


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def describe(tree: Path) -> str:
    """``<short sha> <subject>`` of a tree's HEAD, '+ uncommitted changes' when it has some."""
    head = git("log", "-1", "--format=%h %s", cwd=tree)
    if head.returncode:
        return f"{tree} (not a git checkout)"
    text = head.stdout.strip()
    text = text if len(text) <= 90 else text[:87] + "..."
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=tree).stdout.strip()
    return text + (" + uncommitted changes" if dirty else "")


@contextmanager
def old_tree(rev: str, given: str | None) -> Iterator[Path]:
    """``given`` as it is, or ``rev`` checked out in a temporary worktree (removed afterwards)."""
    if given:
        path = Path(given).resolve()
        if not (path / "deepkin").is_dir():
            raise BenchmarkError(f"--old-tree {path}: not a deepkin checkout (no deepkin/ folder)")
        yield path
        return
    if git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode:
        raise BenchmarkError(f"revision {rev!r} does not exist in {ROOT}")
    with tempfile.TemporaryDirectory(prefix="deepkin-rev-") as tmp:
        path = Path(tmp) / "tree"
        added = git("worktree", "add", "--detach", str(path), rev)
        if added.returncode:
            raise BenchmarkError(f"git worktree add {rev}: {added.stderr.strip()}")
        try:
            yield path
        finally:
            git("worktree", "remove", "--force", str(path))


def tree_env(tree: Path) -> dict[str, str]:
    """The environment in which a subprocess imports ``tree``'s packages (not this checkout's
    editable install, not the caller's folder)."""
    return {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}


def write_model_in(tree: Path, path: Path, mechanism: str, hidden: str) -> None:
    """Write the random model with ``tree``'s writer; BenchmarkError unless ``tree``'s packages
    were the ones imported."""
    done = subprocess.run([sys.executable, "-c", WRITE_MODEL, str(path), mechanism, hidden],
                          env={**os.environ, **tree_env(tree)}, capture_output=True, text=True)
    if done.returncode:
        raise BenchmarkError(f"writing the model with {tree}'s writer failed:\n{done.stderr[-3000:]}")
    files = json.loads(done.stdout.strip().splitlines()[-1])
    stray = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(tree.resolve())}
    if stray:
        raise BenchmarkError(f"a subprocess meant to run {tree} imported {stray} instead "
                             f"(PYTHONSAFEPATH needs Python 3.11+)")


def same_model(a: Path, b: Path) -> bool:
    """Both files hold the same metadata, mechanism and tensors (read by this checkout)."""
    meta_a, tensors_a, yaml_a = read_model_file(a)
    meta_b, tensors_b, yaml_b = read_model_file(b)
    return (meta_a == meta_b and yaml_a == yaml_b and tensors_a.keys() == tensors_b.keys()
            and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a))


def prepare_models(tree: Path, work: Path, mechanism: str, hidden: str) -> tuple[Path, Path, str]:
    """The model folders of the old and the new server, and a line saying what they hold."""
    old_dir, new_dir, ours_dir = work / "old", work / "new", work / "ours"
    for d in (old_dir, new_dir, ours_dir):
        d.mkdir()
    old_file = old_dir / f"{MODEL}.safetensors"
    write_model_in(tree, old_file, mechanism, hidden)
    ours = write_random_model(ours_dir / f"{MODEL}.safetensors", mechanism,
                              hidden=[int(h) for h in hidden.split(",")])
    try:
        equal = same_model(old_file, ours)
    except Exception as exc:  # noqa: BLE001 - this checkout cannot read the older file: say so
        ours.rename(new_dir / ours.name)
        return old_dir, new_dir, (f"model: this checkout cannot read the old tree's file ({exc}); "
                                  f"each server serves its own tree's random model")
    identical = old_file.read_bytes() == ours.read_bytes()
    line = (f"model: one file written by the old tree's writer ({old_file.stat().st_size / 2**20:.1f} "
            f"MiB), served by both servers (byte-identical by construction); this checkout reads it, "
            f"and its own writer gives ")
    if identical:
        line += "the same bytes"
    elif equal:
        line += ("the same tensors and metadata (the bytes differ in the order of the safetensors "
                 "metadata entries, which varies from one write to the next)")
    else:
        line += "a DIFFERENT model (tensors or metadata differ); both still serve the old tree's file"
    return old_dir, old_dir, line


def server(name: str, tree: Path, model_dir: Path, args: argparse.Namespace, mib: float) -> LiveServer:
    """``deepkin serve`` of ``tree`` on ``model_dir``, started; BenchmarkError with its log's end."""
    live = LiveServer(model_dir, "--threads", str(args.threads), "--device", args.device,
                      "--max-body-mb", str(max(1024, 4 * mib)), env=tree_env(tree),
                      die_with_parent=True)
    try:
        return live.start()
    except ServerStartError as exc:
        raise BenchmarkError(f"the {name} server ({tree}) did not start: {exc}")


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return q[0], q[2]


def compare_cells(cells: int, args: argparse.Namespace, conns: dict[str, http.client.HTTPConnection],
                  pids: dict[str, int]) -> tuple[float, float]:
    """Time one cell count, old and new alternating; print its lines; (new/old throughput, max |ΔT|)."""
    states = make_states(args.mechanism, cells, 1500.0)
    path = f"/v1/models/{MODEL}/step"
    answers = {}
    for _ in range(max(1, args.warmup)):
        for side in ("old", "new"):
            answers[side] = post_binary(conns[side], path, states)
    d_t = float(np.max(np.abs(temperature(answers["new"]) - temperature(answers["old"]))))
    d_all = float(np.max(np.abs(answers["new"] - answers["old"])))
    wall: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(args.repeats):
        for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
            c0 = process_cpu_s(pids[side])
            t0 = time.perf_counter()
            post_binary(conns[side], path, states)
            wall[side].append(time.perf_counter() - t0)
            cpu[side].append(process_cpu_s(pids[side]) - c0)
    med = {side: statistics.median(v) for side, v in wall.items()}
    ratio = med["old"] / med["new"]
    pair_lo, pair_hi = quartiles([o / n for o, n in zip(wall["old"], wall["new"])])
    cpu_mean = {side: sum(v) / len(v) for side, v in cpu.items()}  # /proc counts 10 ms ticks: sum them
    print(f"{cells:>9,} cells  wall s, old: " + " ".join(f"{t:.4f}" for t in wall["old"]))
    print(f"{'':>15}  wall s, new: " + " ".join(f"{t:.4f}" for t in wall["new"]))
    print(f"{'':>15}  old {med['old'] * 1e3:9.2f} ms ({cells / med['old'] / 1e6:.4f} M cells/s)   "
          f"new {med['new'] * 1e3:9.2f} ms ({cells / med['new'] / 1e6:.4f} M cells/s)   "
          f"new/old throughput {ratio:.3f} ({100 * (ratio - 1):+.1f} %)")
    print(f"{'':>15}  pairs' new/old 25-75 %: {pair_lo:.3f}-{pair_hi:.3f}   server CPU a request (mean): "
          f"old {cpu_mean['old'] * 1e3:.1f} ms, new {cpu_mean['new'] * 1e3:.1f} ms "
          f"(old/new {cpu_mean['old'] / max(cpu_mean['new'], 1e-9):.3f})")
    agree = "bit-identical" if d_all == 0.0 else (
        "within tolerance" if d_t <= args.tolerance_k else "DISAGREE")
    print(f"{'':>15}  answers: max |ΔT| {d_t:.3g} K, max |Δ| of any column {d_all:.3g} ({agree})")
    return ratio, d_t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=DEFAULT_REV, help=f"The old revision (default {DEFAULT_REV})")
    ap.add_argument("--old-tree", help="A checkout of the old revision to use as it is (no worktree made)")
    ap.add_argument("--mechanism", default="gri30.yaml")
    ap.add_argument("--hidden", default="400,400,400", help="Hidden layer sizes of the random model")
    ap.add_argument("--cells", default="1000,65536", help="Cells a request, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15, help="Timed requests to each server per count")
    ap.add_argument("--warmup", type=int, default=2, help="Untimed requests to each server per count")
    ap.add_argument("--tolerance-k", type=float, default=1e-9, help="Largest |ΔT| (K) called agreement")
    args = ap.parse_args()
    counts = [int(c) for c in args.cells.split(",")]

    try:
        with old_tree(args.rev, args.old_tree) as tree, tempfile.TemporaryDirectory() as tmp:
            old_dir, new_dir, model_line = prepare_models(tree, Path(tmp), args.mechanism, args.hidden)
            mib = max(counts) * (2 + load_mechanism(args.mechanism).n_species) * 8 / 2**20
            print(f"old: {describe(tree)}" + ("" if args.old_tree else f"  (--rev {args.rev})"))
            print(f"new: {describe(ROOT)}")
            print(f"both: {sys.executable} -m deepkin serve, PYTHONPATH=<tree>, PYTHONSAFEPATH=1; "
                  f"{args.mechanism}, hidden {args.hidden}, {args.threads} torch thread(s) each, "
                  f"device {args.device}, {args.repeats} repeats, load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(model_line)
            servers = {"old": server("old", tree, old_dir, args, mib)}
            try:
                servers["new"] = server("new", ROOT, new_dir, args, mib)
                conns = {side: http.client.HTTPConnection("127.0.0.1", s.port, timeout=3600)
                         for side, s in servers.items()}
                pids = {side: s.process.pid for side, s in servers.items()}
                results = {c: compare_cells(c, args, conns, pids) for c in counts}
                for conn in conns.values():
                    conn.close()
            finally:
                for s in servers.values():
                    s.stop()
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{c:,} cells {r:.3f}" for c, (r, _) in results.items())
    print(f"service path, new/old throughput (wall medians): {summary}; the issue asks >= 0.95; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if any(d > args.tolerance_k for _, d in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
