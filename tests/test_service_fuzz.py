"""Property-based fuzzing of the service's OpenAPI spec (schemathesis) against a live server: no
request, however malformed, gets a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from service.live_server import LiveServer  # noqa: E402
from tests.helpers.models import write_test_model  # noqa: E402

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-models")
    write_test_model(d / "h2.safetensors")
    with LiveServer(d, "--token", TOKEN, "--max-body-mb", "1") as srv:
        yield srv


def test_no_input_produces_a_server_error(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for headers, real_model in ((auth, False), (auth, True), ({}, True)):
                if real_model and case.path_parameters and "name" in case.path_parameters:
                    case.path_parameters = {**case.path_parameters, "name": "h2"}  # reach the handler
                response = case.call(base_url=live.url, headers=headers, timeout=30)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                case.validate_response(response, checks=[not_a_server_error])
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        fuzz()
    assert 200 in seen and 401 in seen and 422 in seen, seen  # the fuzzing reached the handlers
