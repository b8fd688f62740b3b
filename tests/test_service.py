"""The chemistry-step service against a real uvicorn server on 127.0.0.1 (``deepkin serve``).

Models are random-weight files of the right shape for h2o2.yaml (see ``tests.helpers.models``); every
answer is compared with the in-process ``Integrator`` on the same states.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import signal
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cantera as ct
import httpx
import numpy as np
import pytest

from kinetics.integrator import Integrator
from service.client import Client, ServiceCallError
from service.live_server import LiveServer
from tests.helpers.models import write_test_model

TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 2 << 20  # the main server's request-size limit (bytes)


def make_states(n: int, seed: int = 0, t_range=(950.0, 2000.0)) -> np.ndarray:
    """``[n, 12]`` hydrogen/air states (h2o2.yaml order) at random T, P and equivalence ratio."""
    gas = ct.Solution("h2o2.yaml")
    rng = np.random.default_rng(seed)
    out = np.empty((n, 2 + gas.n_species))
    for i in range(n):
        phi = rng.uniform(0.5, 2.0)
        gas.TPX = rng.uniform(*t_range), rng.uniform(0.5, 5.0) * ct.one_atm, f"H2:{2 * phi},O2:1,N2:3.76"
        out[i, 0], out[i, 1], out[i, 2:] = gas.T, gas.P, gas.Y
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    write_test_model(d / "h2.safetensors")
    # Trained on 1000–2500 K only: colder cells fall back to Cantera.
    write_test_model(d / "h2-narrow.safetensors", temperature_k=(1000.0, 2500.0), seed=1)
    write_test_model(d / "h2-frozen.safetensors", frozen_temperature_k=1100.0, seed=2)
    return d


@pytest.fixture(scope="module")
def server(model_dir):
    with LiveServer(model_dir, "--token", TOKEN, "--max-body-mb", str(MAX_BODY / 2**20)) as srv:
        yield srv


@pytest.fixture(scope="module")
def integrators(model_dir):
    return {name: Integrator.load(model_dir / f"{name}.safetensors", device="cpu")
            for name in ("h2", "h2-narrow", "h2-frozen")}


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, token=TOKEN) as c:
        yield c


def post(server, path, body=b"", headers=None, **kw):
    return httpx.post(server.url + path, content=body, headers={**AUTH, **(headers or {})}, timeout=60, **kw)


# -- facts ------------------------------------------------------------------------------------------

def test_model_facts(client, integrators):
    names = sorted(m["name"] for m in client.models())
    assert names == ["h2", "h2-frozen", "h2-narrow"]
    info = client.model("h2")
    integ = integrators["h2"]
    assert info["species"] == integ.species and info["width"] == 12 and info["dt_s"] == integ.dt_s
    assert info["mechanism_sha256"] == integ.meta.mechanism_sha256
    assert info["near_equilibrium_route_below"] is None  # a single-network model
    assert info["precision"] == "float32"  # a model not validated in bfloat16 runs float32
    text = httpx.get(f"{client._http.base_url}/v1/models/h2/species", headers=AUTH).text
    assert text.split() == integ.species


# -- bit-for-bit agreement with the in-process integrator --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_step_matches_integrator_bit_for_bit(client, integrators, dtype):
    states = make_states(300, seed=1).astype(dtype)
    reply = client.step("h2", states)
    expected = integrators["h2"].step(states)
    assert reply.states.dtype == dtype and expected.dtype == dtype
    assert np.array_equal(reply.states, expected)
    assert not np.array_equal(reply.states, states)  # the step changed something
    assert (reply.n_cells, reply.n_frozen, reply.n_fallback, reply.n_substeps) == (300, 0, 0, 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_json_step_matches_integrator_bit_for_bit(client, integrators, dtype):
    states = make_states(40, seed=2).astype(dtype)
    reply = client.step("h2", states, use_json=True)
    assert np.array_equal(reply.states, integrators["h2"].step(states))


def test_raw_binary_body_and_headers(server, integrators):
    """What a C or Fortran code sends: raw little-endian bytes, no client library."""
    states = make_states(64, seed=3)
    r = post(server, "/v1/models/h2/step", states.astype("<f8").tobytes(),
             {"Content-Type": "application/octet-stream", "X-Cells": "64"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-cells"] == "64" and r.headers["x-fallback-cells"] == "0"
    got = np.frombuffer(r.content, dtype="<f8").reshape(64, 12)
    assert np.array_equal(got, integrators["h2"].step(states))
    r = post(server, "/v1/models/h2/step", b"", {"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.content == b"" and r.headers["x-cells"] == "0"  # found by fuzzing


def test_dt_multiple_of_model_dt(client, integrators):
    states = make_states(50, seed=4)
    reply = client.step("h2", states, dt=3e-6)
    assert reply.n_substeps == 3
    assert np.array_equal(reply.states, integrators["h2"].step(states, 3e-6))
    with pytest.raises(ServiceCallError) as err:
        client.step("h2", states, dt=1.5e-6)
    assert err.value.status == 422 and "whole multiple" in err.value.message


def test_optional_outputs_equal_cantera_at_the_returned_states(client):
    states = make_states(20, seed=5)
    for use_json in (False, True):
        reply = client.step("h2", states, outputs=["net_production_rates", "heat_release_rate"],
                            use_json=use_json)
        gas = ct.Solution("h2o2.yaml")
        for i, row in enumerate(reply.states):
            gas.TPY = row[0], row[1], row[2:]
            assert np.array_equal(reply.outputs["net_production_rates"][i], gas.net_production_rates)
            assert reply.outputs["heat_release_rate"][i] == gas.heat_release_rate
    assert reply.outputs["net_production_rates"].shape == (20, 10)


def test_frozen_and_fallback_cells_are_counted(client, integrators):
    cold = make_states(30, seed=6, t_range=(600.0, 900.0))  # below 1100 K (frozen), below 1000 K (domain)
    hot = make_states(20, seed=7, t_range=(1200.0, 1800.0))
    states = np.concatenate([cold, hot])
    frozen = client.step("h2-frozen", states)
    assert (frozen.n_frozen, frozen.n_fallback) == (30, 0)
    assert np.array_equal(frozen.states, integrators["h2-frozen"].step(states))
    narrow = client.step("h2-narrow", states)
    assert (narrow.n_frozen, narrow.n_fallback) == (0, 30)
    assert np.array_equal(narrow.states, integrators["h2-narrow"].step(states))


# -- bad input: 4xx with a JSON body naming the problem, never a 500 ---------------------------------

def test_bad_states_are_422_naming_the_problem(server, client):
    good = make_states(5, seed=8)
    cases = {}
    nan = good.copy()
    nan[3, 4] = np.nan
    cases["row 3 holds NaN"] = nan
    neg = good.copy()
    neg[2, 5] = -0.5
    cases["row 2 has negative mass fraction of O2"] = neg
    cold = good.copy()
    cold[1, 0] = -5.0
    cases["row 1 has temperature <= 0"] = cold
    off = good.copy()
    off[4, 2:] *= 1.5
    cases["row 4 has mass fractions summing to 1.5"] = off
    for fragment, states in cases.items():
        for use_json in (False, True):
            with pytest.raises(ServiceCallError) as err:
                client.step("h2", states, use_json=use_json)
            assert err.value.status == 422 and fragment in err.value.message, err.value.message
    r = post(server, "/v1/models/h2/step", b"\0" * 100, {"Content-Type": "application/octet-stream"})
    assert r.status_code == 422 and "not a whole number of rows" in r.json()["error"]
    r = post(server, "/v1/models/h2/step", json.dumps({"states": [[1000, 1e5, 1]]}),
             {"Content-Type": "application/json"})
    assert r.status_code == 422 and "expected shape [n, 12]" in r.json()["error"]
    r = post(server, "/v1/models/h2/step", json.dumps({"states": [[1000, 1e5], [1]]}),
             {"Content-Type": "application/json"})
    assert r.status_code == 422
    r = post(server, "/v1/models/h2/step", b"{not json", {"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]
    r = post(server, "/v1/models/h2/step", good.tobytes(), {"X-Dtype": "int8"})
    assert r.status_code == 422 and "X-Dtype" in r.json()["error"]
    r = post(server, "/v1/models/h2/step", good.tobytes(), {"Content-Type": "text/csv"})
    assert r.status_code == 415
    r = post(server, "/v1/models/h2/step?dt=abc", good.tobytes())
    assert r.status_code == 422 and "dt" in r.json()["error"]
    r = post(server, "/v1/models/h2/step?outputs=entropy", good.tobytes())
    assert r.status_code == 422 and "entropy" in r.json()["error"]
    r = post(server, "/v1/models/nope/step", good.tobytes())
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_mechanism_hash_and_species_mismatch_are_409(server, client):
    states = make_states(3, seed=9)
    right = client.model("h2")["mechanism_sha256"]
    assert client.step("h2", states, mechanism_sha256=right).n_cells == 3
    with pytest.raises(ServiceCallError) as err:
        client.step("h2", states, mechanism_sha256="ab" * 32)
    assert err.value.status == 409 and "mechanism_sha256" in err.value.message
    with pytest.raises(ServiceCallError) as err:
        client.step("h2", states, mechanism_sha256="ab" * 32, use_json=True)
    assert err.value.status == 409
    species = client.model("h2")["species"]
    swapped = [species[1], species[0], *species[2:]]
    r = post(server, "/v1/models/h2/step", json.dumps({"states": states.tolist(), "species": swapped}),
             {"Content-Type": "application/json"})
    assert r.status_code == 409 and "position 0" in r.json()["error"]


def test_request_size_limit_is_413(server):
    too_big = b"\0" * (MAX_BODY + 96)
    r = post(server, "/v1/models/h2/step", too_big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: chunked transfer, counted as it streams
        for _ in range(0, len(too_big), 1 << 16):
            yield b"\0" * (1 << 16)

    r = httpx.post(server.url + "/v1/models/h2/step", content=chunks(), headers=AUTH, timeout=60)
    assert r.status_code == 413


def test_compressed_bodies_on_v1_as_on_v2(server, integrators):
    """v1 honours Content-Encoding (gzip, deflate) as v2 does, and the body limit applies to the
    inflated bytes too (for binary v2 data behind a JSON header alike)."""
    states = make_states(40, seed=14)
    expected = integrators["h2"].step(states)
    as_json = json.dumps({"states": states.tolist()}).encode()
    for coding, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        r = post(server, "/v1/models/h2/step", pack(states.tobytes()), {"Content-Encoding": coding})
        assert r.status_code == 200, r.text
        assert np.array_equal(np.frombuffer(r.content).reshape(states.shape), expected)
        r = post(server, "/v1/models/h2/step", pack(as_json),
                 {"Content-Type": "application/json", "Content-Encoding": coding})
        assert r.status_code == 200 and np.array_equal(r.json()["states"], expected)
    zeros = gzip.compress(bytes(16 * MAX_BODY))
    r = post(server, "/v1/models/h2/step", zeros, {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "once decompressed" in r.json()["error"]
    head = json.dumps({"inputs": [{"name": "STATES", "shape": [1, 12], "datatype": "FP64",
                                   "parameters": {"binary_data_size": 96}}]}).encode()
    packed = gzip.compress(head + bytes(16 * MAX_BODY))
    r = post(server, "/v2/models/h2/infer", packed, {"Content-Encoding": "gzip",
                                                     "Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 413 and "once decompressed" in r.json()["error"]


def test_auth(server):
    states = make_states(2, seed=10).tobytes()
    r = httpx.post(server.url + "/v1/models/h2/step", content=states)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(server.url + "/v1/models/h2/step", content=states,
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/metrics").status_code == 401
    # Probes stay open.
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_metrics(server, client):
    client.step("h2-narrow", make_states(10, seed=11, t_range=(600, 800)))
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert re.search(r'deepkin_requests_total\{method="POST",route="/v1/models/\{name\}/step",status="200"\} '
                     r'[1-9]', text)
    assert re.search(r'deepkin_request_errors_total\{route="/v1/models/\{name\}/step",status="422"\} [1-9]',
                     text)
    fallback = re.search(r'deepkin_fallback_cells_total\{model="h2-narrow"\} ([0-9.e+]+)', text)
    assert fallback and float(fallback.group(1)) >= 10
    for name in ("deepkin_request_seconds_bucket", "deepkin_queue_seconds_bucket",
                 "deepkin_batch_cells_bucket", "deepkin_cells_per_second", "deepkin_cells_total"):
        assert name in text


def test_openapi_documents_both_bodies(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["paths"]["/v1/models/{name}/step"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/octet-stream", "application/json"}
    assert "StepRequest" in spec["components"]["schemas"]
    assert "InferInputTensor" in spec["components"]["schemas"]


# -- KServe v2 with Triton's own client --------------------------------------------------------------

def test_triton_client(server, integrators):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    headers = dict(AUTH)  # tritonclient writes its own headers into this dict: keep AUTH clean
    assert triton.is_server_live(headers=headers) and triton.is_server_ready(headers=headers)
    assert triton.is_model_ready("h2", headers=headers)
    meta = triton.get_model_metadata("h2", headers=headers)
    assert meta["inputs"][0]["name"] == "STATES" and meta["inputs"][0]["shape"] == [-1, 12]
    states = make_states(100, seed=12)
    for dtype, datatype in ((np.float64, "FP64"), (np.float32, "FP32")):
        for binary in (True, False):
            x = states.astype(dtype)
            inp = httpclient.InferInput("STATES", list(x.shape), datatype)
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [httpclient.InferRequestedOutput("STATES", binary_data=binary),
                    httpclient.InferRequestedOutput("HEAT_RELEASE_RATE", binary_data=binary)]
            result = triton.infer("h2", [inp], outputs=outs, headers=dict(AUTH), parameters={"dt": 2e-6})
            got = result.as_numpy("STATES")
            assert got.dtype == dtype and np.array_equal(got, integrators["h2"].step(x, 2e-6))
            assert result.as_numpy("HEAT_RELEASE_RATE").shape == (100,)
            assert result.get_response()["parameters"]["n_substeps"] == 2
    inp = httpclient.InferInput("STATES", [10, 12], "FP64")
    inp.set_data_from_numpy(states[:10])
    result = triton.infer("h2", [inp], headers=dict(AUTH), request_compression_algorithm="gzip")
    assert np.array_equal(result.as_numpy("STATES"), integrators["h2"].step(states[:10]))
    bad = httpclient.InferInput("STATES", [10, 11], "FP64")
    bad.set_data_from_numpy(states[:10, :11].copy())
    with pytest.raises(InferenceServerException, match=r"expected \[n, 12\]"):
        triton.infer("h2", [bad], headers=dict(AUTH))
    nan = states[:10].copy()
    nan[7, 0] = np.nan
    inp = httpclient.InferInput("STATES", [10, 12], "FP64")
    inp.set_data_from_numpy(nan)
    with pytest.raises(InferenceServerException, match="row 7 holds NaN"):
        triton.infer("h2", [inp], headers=dict(AUTH))
    triton.close()


def test_v2_json_without_triton(server, integrators):
    states = make_states(4, seed=13)
    body = {"inputs": [{"name": "STATES", "shape": [4, 12], "datatype": "FP64",
                        "data": states.ravel().tolist()}], "parameters": {"mechanism_sha256": "00" * 32}}
    r = post(server, "/v2/models/h2/infer", json.dumps(body), {"Content-Type": "application/json"})
    assert r.status_code == 409
    del body["parameters"]
    r = post(server, "/v2/models/h2/infer", json.dumps(body), {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "STATES" and out["shape"] == [4, 12]
    assert np.array_equal(np.asarray(out["data"]).reshape(4, 12), integrators["h2"].step(states))
    r = post(server, "/v2/models/h2/infer", gzip.compress(b"x" * 100), {"Content-Encoding": "br"})
    assert r.status_code == 415 and "content-encoding" in r.json()["error"]  # RFC 9110 §15.5.16
    r = post(server, "/v2/models/h2/infer", b"not gzip", {"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip" in r.json()["error"]


# -- dynamic batching, queue limits, disconnects, shutdown -------------------------------------------

@pytest.fixture(scope="module")
def batching_server(model_dir):
    """Waits 400 ms for requests to merge; at most 4 queued requests."""
    with LiveServer(model_dir, "--queue-delay-ms", "400", "--max-queue-requests", "4") as srv:
        yield srv


def _raw_step(url: str, model: str, states: np.ndarray, dt: float | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    dtype = "float32" if states.dtype == np.float32 else "float64"
    path = f"/v1/models/{model}/step" + (f"?dt={dt}" if dt else "")
    conn.request("POST", path, body=states.tobytes(), headers={"X-Dtype": dtype})
    r = conn.getresponse()
    body = r.read()
    headers = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, headers, body


def test_requests_arriving_together_share_one_device_call(batching_server, integrators):
    integ = integrators["h2-narrow"]
    requests = [make_states(40, seed=20, t_range=(600, 1500)), make_states(25, seed=21).astype(np.float32),
                make_states(33, seed=22, t_range=(700, 1600)), make_states(12, seed=23)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda s: _raw_step(batching_server.url, "h2-narrow", s), requests))
    merged = max(int(h["x-batch-requests"]) for _, h, _ in answers)
    assert merged >= 2, [h for _, h, _ in answers]
    for states, (status, headers, body) in zip(requests, answers):
        assert status == 200
        got = np.frombuffer(body, dtype=states.dtype).reshape(states.shape)
        solo = integ.advance(states)
        # Per-request counts are exact even when merged; states agree with a solo call to rounding.
        assert int(headers["x-fallback-cells"]) == solo.n_fallback
        assert int(headers["x-cells"]) == len(states)
        rtol = 1e-6 if states.dtype == np.float32 else 1e-11
        np.testing.assert_allclose(got, solo.states, rtol=rtol, atol=1e-30)
    assert sum(solo_fb := [integ.advance(s).n_fallback for s in requests]) > 0, solo_fb
    # Different dt never share a call.
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda dt: _raw_step(batching_server.url, "h2", requests[0], dt), [1e-6, 2e-6])
    assert a[1]["x-batch-requests"] == "1" and b[1]["x-substeps"] == "2"


def test_queue_full_is_503_with_retry_after_and_recovers(batching_server):
    states = make_states(20, seed=24)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _raw_step(batching_server.url, "h2", states), range(12)))
    codes = sorted(status for status, _, _ in answers)
    assert set(codes) == {200, 503}, codes
    rejected = [h for status, h, _ in answers if status == 503]
    assert all(h["retry-after"] == "1" for h in rejected)
    assert codes.count(200) >= 4
    time.sleep(0.5)
    assert _raw_step(batching_server.url, "h2", states)[0] == 200


def test_client_that_disconnects_costs_nothing(batching_server):
    def cells_total() -> float:
        text = httpx.get(batching_server.url + "/metrics").text
        m = re.search(r'deepkin_cells_total\{model="h2-frozen"\} ([0-9.e+]+)', text)
        return float(m.group(1)) if m else 0.0

    before = cells_total()
    states = make_states(777, seed=25)
    host, port = batching_server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    body = states.tobytes()
    sock.sendall(f"POST /v1/models/h2-frozen/step HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + body)
    time.sleep(0.1)  # within the 400 ms queue delay
    sock.close()
    # A half-sent body: the client leaves mid-upload.
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST /v1/models/h2-frozen/step HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"\r\n".encode() + body[:1000])
    sock.close()
    time.sleep(1.0)
    assert _raw_step(batching_server.url, "h2-frozen", states[:5])[0] == 200
    assert cells_total() - before == 5  # the abandoned 777 cells never reached the device
    text = httpx.get(batching_server.url + "/metrics").text
    assert re.search(r'deepkin_client_disconnects_total\{route="[^"]*"\} [1-9]', text)


def test_graceful_shutdown_answers_requests_in_flight(model_dir):
    server = LiveServer(model_dir, "--queue-delay-ms", "1500").start()
    states = make_states(10, seed=26)
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=_raw_step(server.url, "h2", states)))
    thread.start()
    time.sleep(0.5)  # the request waits in the queue
    code = server.stop()
    thread.join(30)
    assert answer["r"][0] == 200 and len(answer["r"][2]) == states.nbytes
    # uvicorn re-raises the signal once it has drained, so the exit is "killed by SIGTERM" (or 0).
    assert code in (0, -signal.SIGTERM), server.log()
    assert "Traceback" not in server.log()


def test_serve_refuses_a_directory_without_models(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "deepkin", "serve", "--model-dir", str(tmp_path),
                           "--port", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: model-dir: no *.safetensors model files in {tmp_path}"]


def test_serve_flags_reach_the_settings(tmp_path):
    """Each limit has a flag (and a DEEPKIN_* variable); a bad value is one line naming it."""
    from click.testing import CliRunner

    from deepkin.cli import cli
    from mechanisms.errors import InputError

    for flag, value, field in (("--max-substeps", "0", "max_substeps"),
                               ("--max-cell-substeps", "-1", "max_cell_substeps"),
                               ("--step-timeout-s", "0", "step_timeout_s"),
                               ("--header-timeout-s", "0", "header_timeout_s"),
                               ("--body-timeout-s", "-2", "body_timeout_s"),
                               ("--graceful-shutdown-s", "1", "graceful_shutdown_s"),
                               ("--max-json-mb", "0", "max_json_bytes")):
        result = CliRunner().invoke(cli, ["serve", "--model-dir", str(tmp_path), flag, value],
                                    standalone_mode=False)
        assert isinstance(result.exception, InputError), (flag, result.output)
        assert str(result.exception).startswith(f"{field}:") and "\n" not in str(result.exception)


@pytest.fixture(scope="module")
def shipped_server():
    """One `deepkin serve` on the shipped models' folder (as a user starts it)."""
    from kinetics.model.registry import SHIPPED_DIR

    with LiveServer(SHIPPED_DIR) as srv:
        yield srv


def test_the_methane_model_is_served_beside_the_hydrogen_ones(shipped_server):
    """`deepkin serve` on the shipped folder: h2-air, h2-air-flame and ch4-air side by side;
    cells of a methane flame (GRI-3.0, 53 species) come back as the in-process integrator
    advances them, mass and enthalpy conserved."""
    from kinetics.model.registry import SHIPPED_DIR
    from mechanisms.state import join_states

    gas = ct.Solution("gri30.yaml")
    gas.set_equivalence_ratio(1.0, "CH4:1", "O2:1,N2:3.76")
    gas.TP = 300.0, ct.one_atm
    fresh = gas.Y.copy()
    gas.equilibrate("HP")
    burnt = gas.Y.copy()
    share = np.linspace(0.0, 1.0, 48)[:, None]  # fresh-to-burnt blends at 1 atm, 1000-2200 K
    ys = (1 - share) * fresh + share * burnt
    states = join_states(np.linspace(1000.0, 2200.0, 48), np.full(48, ct.one_atm), ys)
    expected = Integrator.load(SHIPPED_DIR / "ch4-air.safetensors", device="cpu").advance(states)
    with Client(shipped_server.url) as client:
        assert {"h2-air", "h2-air-flame", "ch4-air"} <= {m["name"] for m in client.models()}
        info = client.model("ch4-air")
        assert len(info["species"]) == 53 and info["dt_s"] == 5e-6
        reply = client.step("ch4-air", states)
    assert np.array_equal(reply.states, expected.states)
    assert np.abs(reply.states[:, 2:].sum(axis=1) - 1.0).max() < 1e-9

    def enthalpy(rows: np.ndarray) -> np.ndarray:  # J/kg, by Cantera
        out = []
        for row in rows:
            gas.TPY = row[0], row[1], row[2:]
            out.append(gas.enthalpy_mass)
        return np.array(out)

    assert np.allclose(enthalpy(reply.states), enthalpy(states), rtol=1e-6, atol=1.0)


def test_shipped_model_and_its_near_equilibrium_network_served_bit_for_bit(shipped_server):
    """The shipped model (two networks) through the service equals the in-process integrator."""
    from kinetics.model.registry import resolve_model

    path = resolve_model("h2-air")
    gas = ct.Solution("h2o2.yaml")
    near_equilibrium = []
    for t0, p_atm, phi in ((1200.0, 1.0, 1.0), (1400.0, 5.0, 0.5), (1000.0, 20.0, 2.0)):
        gas.TP = t0, p_atm * ct.one_atm
        gas.set_equivalence_ratio(phi, "H2:1", "O2:1,N2:3.76")
        gas.equilibrate("HP")
        near_equilibrium.append(np.r_[gas.T, gas.P, gas.Y])
    states = np.vstack([near_equilibrium, make_states(61, seed=9, t_range=(1250.0, 1800.0))])
    expected = Integrator.load(path, device="cpu").advance(states)
    assert expected.n_tail_steps >= 3  # the equilibrium cells take the second network
    client = Client(shipped_server.url)
    assert client.model("h2-air")["near_equilibrium_route_below"] == 0.01
    reply = client.step("h2-air", states)
    assert np.array_equal(reply.states, expected.states)
    assert (reply.n_cells, reply.n_fallback) == (64, expected.n_fallback)
