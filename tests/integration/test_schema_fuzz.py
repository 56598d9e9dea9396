"""schemathesis over every operation of the served OpenAPI spec: no input gets a 5xx.

Each operation is one test (schemathesis's `parametrize` over the spec as a dict, the same
document `/openapi.json` serves), calling the real API of the test stack with a key of its
own tenant ("fuzz"), so the destinations it creates never receive other tests' events.
Valid and invalid input are both generated (schemathesis's default modes); the check is
ours: any status >= 500 fails, with the request that caused it; then schemathesis checks
that the status code, the content type and the body are ones the spec documents for the
operation. Bounded by MAX_EXAMPLES per operation to keep the run short.

Why `schema.parametrize()` with a spec loaded at import, and not the lazy `from_fixture`
loader: the operations are known without a running server, so each shows up as its own test
id (and its own per-test timeout), and the test body is a plain sync function, which
neither `asyncio_mode=auto` nor `filterwarnings=error` interferes with.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import build_spec
from tests.integration.conftest import FUZZ_KEY, PLATFORM_KEY, Stack

MAX_EXAMPLES = 20
RESPONSE_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HEADERS = {"Authorization": f"Bearer {FUZZ_KEY}"}
# The tenants API is for platform keys: fuzzed with one, on a tenant of its own.
PLATFORM_HEADERS = {"Authorization": f"Bearer {PLATFORM_KEY}"}
FUZZ_TENANT = "fuzz_platform"

SPEC = build_spec()
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_fuzzed_spec_is_the_served_one(stack: Stack) -> None:
    response = requests.get(f"{stack.api_url}/openapi.json", timeout=10)
    assert response.json() == SPEC


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Iterator[dict[str, str]]:
    """Real ids of the fuzz tenant (a destination, an event, a delivery of it), so that
    operations on an object get past the 404 and have their input checked too."""
    session = requests.Session()
    session.headers.update(HEADERS)
    url = stack.api_url
    created = session.post(
        f"{url}/v2/event-destinations",
        json={
            "name": "fuzz seed",
            "events": ["fuzz.seed"],
            # Nothing listens on the discard port: the delivery fails, but it exists.
            "webhook": {"url": "http://127.0.0.1:9/seed"},
        },
        timeout=15,
    ).json()
    event = session.post(
        f"{url}/v2/events", json={"type": "fuzz.seed", "data": {}}, timeout=15
    ).json()
    deliveries_url = f"{url}/v2/event-destinations/{created['id']}/event-deliveries"
    deadline = time.monotonic() + 20
    deliveries: list[dict[str, str]] = []
    while not deliveries and time.monotonic() < deadline:  # polled with a deadline
        deliveries = session.get(deliveries_url, timeout=15).json()["data"]
        time.sleep(0.1)
    assert deliveries, "the seed delivery never reached the index"
    tenant = requests.post(
        f"{url}/v2/tenants",
        json={"id": FUZZ_TENANT, "name": "fuzz seed"},
        headers=PLATFORM_HEADERS,
        timeout=15,
    )
    assert tenant.status_code in (201, 409), tenant.text
    yield {
        "tenant_id": FUZZ_TENANT,
        "destination_id": created["id"],
        "event_id": event["id"],
        "delivery_id": deliveries[0]["id"],
    }
    session.close()


def _with_real_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Half of the generated ids (chosen by a stable hash) are swapped for real ones; a
    DELETE keeps its own, so the seed destination outlives the run."""
    for name, value in (case.path_parameters or {}).items():
        if name in ids and case.method != "DELETE" and zlib.crc32(str(value).encode()) % 2:
            case.path_parameters[name] = ids[name]


def _fresh_idempotency_key(case: schemathesis.Case) -> None:
    """A generated key repeats across examples (and sessions: PostgreSQL keeps its data), so
    most POSTs would get the 409 of a reused key; a valid key is made unique per call."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 1 <= len(key) <= 255:
        headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_gets_a_server_error(
    case: schemathesis.Case, stack: Stack, seeded: dict[str, str]
) -> None:
    _with_real_ids(case, seeded)
    _fresh_idempotency_key(case)
    headers = PLATFORM_HEADERS if case.path.startswith("/v2/tenants") else HEADERS
    response = case.call(base_url=stack.api_url, headers=headers, timeout=15)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: "
        f"{response.text[:500]}\n{case.as_curl_command()}"
    )
    # Every answer, errors included, is one the spec documents, in the documented shape.
    case.validate_response(response, checks=RESPONSE_CHECKS)
