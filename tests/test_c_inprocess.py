"""The C client library's in-process backend (couplers/c/deepkin_local.cpp): `deepkin_open` on a
model file of `deepkin export`, built against the libtorch of the torch wheel, steps the states
Python's Integrator steps to the same bits, flags the cells it leaves to the caller, refuses bad
input with one line; a build without libtorch refuses a model file. The HTTP path keeps its own
tests (tests/test_couplers_client.py)."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kinetics.integrator import Integrator
from kinetics.model.registry import resolve_model
from tests.conftest import run_cli
from tests.helpers.toolchain import build, need
from tests.test_compiled_step import _cells

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "couplers" / "c"
TORCH = Path(torch.__file__).parent
CELL_FLAGS = {"stepped": 0, "frozen": 1, "fallback": 2}  # enum deepkin_cell_flag
C_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]

# Steps the cells of a binary file (two int64: n, width; then the doubles) with the model of
# argv[1] by dt argv[4] (s), optionally expecting mechanism argv[5]; writes the advanced states
# and the flags to argv[3]; prints the counts, or the status and reason of a failure.
PROGRAM = r"""
#include "deepkin_client.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(deepkin_client *c, const char *what, int rc) {
    char why[1024];
    deepkin_errmsg(c, why, sizeof why);
    printf("%s %d %s\n", what, rc, why);
    deepkin_close(c);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    deepkin_client *c = NULL;
    int rc = deepkin_open(argv[1], NULL, NULL, argc > 5 ? argv[5] : NULL, 30.0, &c);
    if (rc != DEEPKIN_OK) return fail(c, "open", rc);
    FILE *in = fopen(argv[2], "rb");
    int64_t head[2];
    if (!in || fread(head, sizeof head, 1, in) != 1) return 3;
    const long n = (long)head[0], width = (long)head[1];
    if (width != 2 + deepkin_n_species(c)) return 4;
    double *states = malloc((size_t)(n * width) * sizeof(double) + 1);
    double *out = malloc((size_t)(n * width) * sizeof(double) + 1);
    signed char *flags = malloc((size_t)n + 1);
    if (!states || !out || !flags) return 5;
    if (fread(states, sizeof(double), (size_t)(n * width), in) != (size_t)(n * width)) return 6;
    fclose(in);
    rc = deepkin_step(c, n, states, atof(argv[4]), out);
    if (rc != DEEPKIN_OK) return fail(c, "step", rc);
    long cells, frozen, fallback, substeps;
    deepkin_last_counts(c, &cells, &frozen, &fallback, &substeps);
    if (deepkin_last_flags(c, n, flags) != DEEPKIN_OK || deepkin_last_flags(c, n + 1, flags) == 0)
        return 7;
    char first[64], sha[80];
    deepkin_species_name(c, 0, first, sizeof first);
    deepkin_mechanism_sha256(c, sha, sizeof sha);
    printf("cells %ld frozen %ld fallback %ld substeps %ld dt %.17g first %s sha %s http %ld\n", cells,
           frozen, fallback, substeps, deepkin_dt(c), first, sha, deepkin_http_status(c));
    FILE *o = fopen(argv[3], "wb");
    if (!o) return 8;
    fwrite(out, sizeof(double), (size_t)(n * width), o);
    fwrite(flags, 1, (size_t)n, o);
    fclose(o);
    deepkin_close(c);
    return 0;
}
"""

# Opens the model file argv[1] in-process, then allocates a 16 MiB block and prints whether glibc
# mapped it afresh from the kernel (mallinfo2's count of mapped blocks), as it does above its mmap
# threshold (128 kB until the process frees a larger mapped block); freed, a mapped block goes
# straight back, and the next call's faults it in again.
PROBE = r"""
#include "deepkin_client.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    deepkin_client *c = NULL;
    if (deepkin_open(argv[1], NULL, NULL, NULL, 30.0, &c) != DEEPKIN_OK) return 3;
    const struct mallinfo2 before = mallinfo2();
    char *block = malloc((size_t)16 << 20);
    if (!block) return 4;
    const struct mallinfo2 after = mallinfo2();
    printf("mapped %d\n", (int)(after.hblks - before.hblks));
    free(block);
    deepkin_close(c);
    return 0;
}
"""


def build_libtorch_client(d: Path) -> tuple[list[str], list[str]]:
    """The client library with its in-process backend built in ``d`` against the wheel's
    libtorch: its object files and the flags a program links them with (skips without gcc, g++
    or the wheel's C++ headers, unless REQUIRED)."""
    cc, cxx = need("gcc"), need("g++")
    if not (TORCH / "include" / "torch" / "script.h").is_file():
        pytest.skip("this torch wheel ships no C++ headers")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    build([cxx, "-std=c++20", "-O2", abi, "-I", str(CLIENT), "-I", str(TORCH / "include"),
              "-I", str(TORCH / "include/torch/csrc/api/include"), "-c",
              str(CLIENT / "deepkin_local.cpp"), "-o", "local.o"], d)
    build([cc, "-std=c99", *C_FLAGS, "-DDEEPKIN_WITH_LIBTORCH", "-I", str(CLIENT), "-c",
              str(CLIENT / "deepkin_client.c"), "-o", "client_local.o"], d)
    return ([str(d / "client_local.o"), str(d / "local.o")],
            [f"-L{TORCH / 'lib'}", f"-Wl,-rpath,{TORCH / 'lib'}", "-Wl,--no-as-needed", "-ltorch",
             "-ltorch_cpu", "-lc10", "-lcurl", "-lm"])


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """The program built with the in-process backend (against the wheel's libtorch) and
    without it (HTTP only)."""
    d = tmp_path_factory.mktemp("c-inprocess")
    objects, link = build_libtorch_client(d)
    cc, cxx = need("gcc"), need("g++")
    (d / "step_file.c").write_text(PROGRAM)
    build([cc, "-std=c99", *C_FLAGS, "-I", str(CLIENT), "-c", "step_file.c", "-o", "step_file.o"], d)
    build([cxx, "step_file.o", *objects, "-o", "step_local", *link], d)
    (d / "probe.c").write_text(PROBE)
    build([cc, "-std=gnu99", *C_FLAGS, "-I", str(CLIENT), "-c", "probe.c", "-o", "probe.o"], d)
    build([cxx, "probe.o", *objects, "-o", "probe_local", *link], d)
    build([cc, "-std=c99", *C_FLAGS, "-I", str(CLIENT), "step_file.c",
              str(CLIENT / "deepkin_client.c"), "-o", "step_http", "-lcurl", "-lm"], d)
    return {"local": d / "step_local", "http": d / "step_http", "probe": d / "probe_local"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("exported")
    files = {}
    for model in ("h2-air-flame", "ch4-air"):
        files[model] = d / f"{model}.pt"
        proc = run_cli("export", model, "-o", str(files[model]))
        assert proc.returncode == 0, proc.stderr
    return files


def _run(program: Path, model_file: Path | str, states: np.ndarray, folder: Path, dt: float = 0.0,
         sha: str | None = None) -> tuple[subprocess.CompletedProcess, np.ndarray, np.ndarray]:
    """Run ``program`` on ``states``; ``(run, advanced states, flags)`` (empty on failure)."""
    source, out = folder / "states.bin", folder / "out.bin"
    source.write_bytes(np.array(states.shape, dtype=np.int64).tobytes() + states.tobytes())
    out.unlink(missing_ok=True)
    run = subprocess.run([str(program), str(model_file), str(source), str(out), repr(dt)]
                         + ([sha] if sha else []), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    if run.returncode != 0 or not out.exists():
        return run, np.empty(0), np.empty(0)
    raw = out.read_bytes()
    size = states.size * 8
    return (run, np.frombuffer(raw[:size]).reshape(states.shape),
            np.frombuffer(raw[size:], dtype=np.int8))


def _as_cuda_export(src: Path, dst: Path) -> Path:
    """A copy of the export ``src`` as `deepkin export --device cuda` writes it: its tensors'
    storages located on cuda:0 (TorchScript's pickle names the location as a string)."""
    with zipfile.ZipFile(src) as fin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as fout:
        for entry in fin.infolist():
            data = fin.read(entry)
            if entry.filename.endswith("/data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            fout.writestr(entry, data)
    return dst


@pytest.mark.parametrize("model, n_substeps", [("h2-air-flame", 1), ("h2-air-flame", 3),
                                               ("ch4-air", 2)])
def test_the_c_library_steps_a_model_file_as_python_does(programs, exported, tmp_path, model,
                                                           n_substeps):
    integrator = Integrator.load(resolve_model(model), device="cpu", dtype="float32")
    states = _cells(model)
    run, advanced, flags = _run(programs["local"], exported[model], states, tmp_path,
                                dt=n_substeps * integrator.dt_s)
    assert run.returncode == 0, run.stdout + run.stderr
    result = integrator.advance(states, n_substeps)
    stepped = flags == CELL_FLAGS["stepped"]
    assert np.array_equal(flags == CELL_FLAGS["frozen"], result.frozen)
    assert np.array_equal(flags == CELL_FLAGS["fallback"], result.fallback)  # Python: Cantera's
    assert stepped.sum() > 300
    assert np.array_equal(advanced[stepped], result.states[stepped])  # the same bits
    assert np.array_equal(advanced[~stepped], states[~stepped])  # returned as given
    counts = re.fullmatch(r"cells (\d+) frozen (\d+) fallback (\d+) substeps (\d+) dt (\S+) "
                          r"first (\S+) sha (\w+) http 0\n", run.stdout)
    assert counts, run.stdout
    assert [int(v) for v in counts.groups()[:4]] == [len(states), result.n_frozen, result.n_fallback,
                                                     n_substeps]
    assert float(counts.group(5)) == integrator.dt_s
    assert counts.group(6, 7) == (integrator.species[0], integrator.meta.mechanism_sha256)


def test_the_c_library_steps_a_bfloat16_hidden_file_as_python_does(programs, tmp_path):
    """A file exported with bfloat16 in the hidden layers only (float32 first and last layers)
    loads in C++ and steps the cells as the Integrator in that precision does, bit for bit."""
    model_file = tmp_path / "hidden.pt"
    proc = run_cli("export", "h2-air-flame", "-o", str(model_file), "--precision", "bfloat16-hidden")
    assert proc.returncode == 0, proc.stderr
    integrator = Integrator.load(resolve_model("h2-air-flame"), device="cpu",
                                 dtype="bfloat16-hidden")
    states = _cells("h2-air-flame")
    run, advanced, flags = _run(programs["local"], model_file, states, tmp_path, dt=0.0)
    assert run.returncode == 0, run.stdout + run.stderr
    result = integrator.advance(states, 1)
    stepped = flags == CELL_FLAGS["stepped"]
    assert stepped.sum() > 300 and np.array_equal(flags == CELL_FLAGS["fallback"], result.fallback)
    assert np.array_equal(advanced[stepped], result.states[stepped])


def test_bad_input_and_bad_files_are_one_line(programs, exported, tmp_path):
    states = _cells("h2-air-flame")[:5].copy()
    model_file = exported["h2-air-flame"]
    cases = []
    nan = states.copy()
    nan[3, 4] = np.nan
    cases.append((programs["local"], model_file, nan, 0.0, None,
                  r"step 9 states: row 3 holds NaN or inf"))
    cases.append((programs["local"], model_file, states, 1.5e-6, None,
                  r"step 9 dt: 1\.5e-06 s is not a whole multiple of the model's dt \(1e-06 s\)"))
    cases.append((programs["local"], model_file, states, 0.0, "ab" * 32,
                  r"open 8 model file \S+ has mechanism sha256 \w{12}\.\.\., expected abababababab\.\.\.: "
                  r"it was trained on another mechanism"))
    cases.append((programs["local"], resolve_model("h2-air-flame"), states, 0.0, None,
                  r"open 12 model file \S+: libtorch cannot load it \(.+\); write it with "
                  r"`deepkin export`"))
    cases.append((programs["local"], f"file://{tmp_path}/missing.pt", states, 0.0, None,
                  r"open 7 model file \S+missing\.pt does not exist"))
    # a path without file:// is still a path: "does not exist", not a server that is not there
    cases.append((programs["local"], f"{tmp_path}/gone/model.pt", states, 0.0, None,
                  r"open 7 model file \S+gone/model\.pt does not exist"))
    cases.append((programs["local"], _as_cuda_export(model_file, tmp_path / "cuda.pt"), states, 0.0,
                  None, r"open 12 model file \S+cuda\.pt was exported for CUDA \(deepkin export "
                        r"--device cuda\), and CUDA is not available to this process \(.+\); "
                        r"export it with --device cpu"))
    cases.append((programs["http"], model_file, states, 0.0, None,
                  r"open 12 deepkin_open: \S+ is a model file, and this build of the client "
                  r"library has no in-process backend .*"))
    for program, path, cells, dt, sha, expected in cases:
        run, _, _ = _run(program, path, cells, tmp_path, dt=dt, sha=sha)
        assert run.returncode == 1, run.stdout + run.stderr
        assert re.fullmatch(expected + r"\n", run.stdout), (expected, run.stdout)


def test_an_in_process_open_keeps_freed_memory_for_the_next_call_unless_told_not_to(programs,
                                                                                      exported):
    """The in-process backend raises glibc's mmap and trim thresholds once (deepkin_local.cpp,
    keep_step_memory), so that a step's temporaries come from the heap and stay there between
    calls instead of being mapped and faulted in afresh each call. DEEPKIN_MALLOC=system, or the
    process's own glibc settings, leave the allocator as it is."""
    def mapped(**env: str) -> int:
        base = {k: v for k, v in os.environ.items()
                if k not in ("DEEPKIN_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                             "GLIBC_TUNABLES")}
        run = subprocess.run([str(programs["probe"]), str(exported["h2-air-flame"])],
                             capture_output=True, text=True, timeout=120,
                             env=dict(base, OMP_NUM_THREADS="1", **env))
        assert run.returncode == 0, run.stdout + run.stderr
        return int(re.fullmatch(r"mapped (-?\d+)\n", run.stdout).group(1))

    assert mapped() == 0
    assert mapped(DEEPKIN_MALLOC="system") == 1
    assert mapped(MALLOC_TRIM_THRESHOLD_="268435456") == 1  # the process's own choice stands
