"""The C client library (couplers/c) from C, C++ and Fortran against a live server: results,
counts, errors as one line, and retries of refused connections and of 503 answers."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import service.live_server as live_server
from service.live_server import LiveServer
from tests.helpers import SHARED_TOKEN
from tests.helpers.toolchain import REQUIRED, build, need

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "couplers" / "c"
TOKEN = SHARED_TOKEN


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Path]:
    """The C example built as C and as C++ against the library, and the Fortran example."""
    cc, cxx = need("gcc"), need("g++")
    d = tmp_path_factory.mktemp("client-build")
    flags = ["-O2", "-Wall", "-Wextra", "-Werror"]
    build([cc, "-std=c99", *flags, "-c", str(CLIENT / "deepkin_client.c"), "-o", "client.o"], d)
    build([cc, "-std=c99", *flags, "-I", str(CLIENT), str(ROOT / "examples/c/deepkin_step.c"), "client.o",
              "-o", "step_c", "-lcurl", "-lm"], d)
    build([cxx, *flags, "-I", str(CLIENT), "-x", "c++", str(ROOT / "examples/c/deepkin_step.c"), "-x",
              "none", "client.o", "-o", "step_cpp", "-lcurl"], d)
    built = {"c": d / "step_c", "c++": d / "step_cpp"}
    if shutil.which("gfortran") or REQUIRED:
        fc = [need("gfortran"), "-O2", "-Wall", "-std=f2008"]
        build([*fc, "-c", str(ROOT / "couplers/fortran/deepkin_client.f90")], d)
        build([*fc, str(ROOT / "examples/fortran/deepkin_step.f90"), "client.o", "-o", "step_f",
                  "-lcurl"], d)
        built["fortran"] = d / "step_f"
    return built


def _run(binary: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("language", ["c", "c++", "fortran"])
def test_one_step_from_each_language(binaries, h2_server, language):
    if language not in binaries:
        pytest.skip("no gfortran (apt-get install gfortran)")
    run = _run(binaries[language], h2_server.url, "h2", TOKEN)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cells 4, frozen 0, fallback 0, substeps 1" in run.stdout
    temps = [float(t) for t in re.findall(r"->\s+([0-9.]+) K", run.stdout)]
    assert len(temps) == 4 and all(900 < t < 2000 for t in temps)
    assert run.stdout.rstrip().endswith("ok")


def test_the_three_languages_agree(binaries, h2_server):
    outputs = {lang: _run(b, h2_server.url, "h2", TOKEN).stdout for lang, b in binaries.items()}
    temps = {lang: [float(t) for t in re.findall(r"->\s+([0-9.]+) K", out)] for lang, out in outputs.items()}
    reference = temps["c"]
    for lang, values in temps.items():
        assert values == pytest.approx(reference, abs=1e-6), lang  # the same bytes, printed to 6 decimals


def test_errors_are_one_readable_line(binaries, h2_server):
    wrong = _run(binaries["c"], h2_server.url, "h2", "not-the-token")
    assert wrong.returncode == 1
    assert re.fullmatch(r"error: open: GET \S+/v1/models/h2: HTTP 403: .*token.*\n", wrong.stderr), \
        wrong.stderr
    missing = _run(binaries["c"], h2_server.url, "no-such-model", TOKEN)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "served: h2" in missing.stderr
    nan = _run(binaries["c"], h2_server.url, "h2", TOKEN)
    assert re.search(r"NaN cell: POST \S+/step: HTTP 422: states: row 0 holds NaN or inf", nan.stdout)


def test_refused_connections_are_retried_until_the_server_is_up(binaries, h2_models, monkeypatch):
    port = live_server.free_port()
    client = subprocess.Popen([str(binaries["c"]), f"http://127.0.0.1:{port}", "h2", TOKEN],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert client.poll() is None  # still retrying: nothing listens yet
    monkeypatch.setattr(live_server, "free_port", lambda: port)
    with LiveServer(h2_models, "--token", TOKEN):
        out, err = client.communicate(timeout=60)
    assert client.returncode == 0, out + err
    assert "cells 4" in out


def test_no_server_is_one_line_after_the_timeout(tmp_path):
    cc = need("gcc")
    program = tmp_path / "open.c"
    program.write_text("""
#include "deepkin_client.h"
#include <stdio.h>
int main(int argc, char **argv) {
    deepkin_client *c; char why[512];
    int status = deepkin_open(argv[1], "h2", NULL, NULL, 1.5, &c);
    deepkin_errmsg(c, why, sizeof why);
    printf("%d %s\\n", status, why);
    deepkin_close(c);
    return status == DEEPKIN_ERROR_CONNECT ? 0 : 1;
}
""")
    build([cc, "-I", str(CLIENT), str(program), str(CLIENT / "deepkin_client.c"), "-o", "open",
              "-lcurl", "-lm"], tmp_path)
    url = f"http://127.0.0.1:{live_server.free_port()}"
    started = time.monotonic()
    run = _run(tmp_path / "open", url)
    assert run.returncode == 0, run.stdout
    assert re.fullmatch(rf"3 no server at {re.escape(url)}: connection refused \(\d+ tries in 1.5 s\); "
                        r"is `deepkin serve` running there\?\n", run.stdout)
    assert time.monotonic() - started >= 1.5  # it did retry for the whole timeout


def test_busy_answers_503_are_retried(binaries, h2_models):
    # One request may wait in the queue, and it waits 0.5 s for company: clients that arrive
    # meanwhile are answered 503 (Retry-After 1 s) and must come back on their own.
    with LiveServer(h2_models, "--token", TOKEN, "--max-queue-requests", "1", "--queue-delay-ms", "500",
                    "--max-batch-requests", "1") as srv:
        clients = [subprocess.Popen([str(binaries["c"]), srv.url, "h2", TOKEN], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [c.communicate(timeout=120) for c in clients]
        metrics = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    for client, (out, err) in zip(clients, results):
        assert client.returncode == 0, out + err
    rejected = re.search(r'^deepkin_queue_rejected_total\{model="h2"\} ([0-9.]+)', metrics, flags=re.M)
    assert rejected and float(rejected.group(1)) >= 1, metrics[-2000:]
