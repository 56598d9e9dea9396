"""Sources (api/sources/): their settings, the role, and what a record becomes, without a
server (the integration test tests/integration/test_sources.py runs them for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from api.acceptance import accept
from api.sources.ingest import Ingester, Rejection, SourceReader, reject_record
from api.sources.kafka import consumer_options
from api.sources.reconnect import redacted
from api.stable_ids import IdSource
from pipeline.roles import INGEST, parse_roles
from pipeline.settings import Settings
from pipeline.source_settings import KafkaSource, RabbitMQSource

KAFKA = {"name": "orders", "type": "kafka", "bootstrap_servers": "k:9092", "topic": "t"}


def test_sources_come_from_the_variable_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "amqp"
    secret.write_text("amqp://herald:pw@rabbit/\n")
    listed = tmp_path / "sources.json"
    listed.write_text(
        json.dumps([{"name": "jobs", "type": "rabbitmq", "url_file": str(secret), "queue": "q"}])
    )
    monkeypatch.setenv("HERALD_SOURCES", json.dumps([KAFKA]))
    monkeypatch.setenv("HERALD_SOURCES_FILE", str(listed))
    kafka, rabbit = Settings().all_sources()
    assert isinstance(kafka, KafkaSource) and kafka.group == "herald-source-orders"
    assert isinstance(rabbit, RabbitMQSource) and rabbit.url is not None
    assert rabbit.url.get_secret_value() == "amqp://herald:pw@rabbit/"
    assert "pw" not in repr(rabbit)


def test_two_sources_of_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SOURCES", json.dumps([KAFKA, KAFKA]))
    with pytest.raises(ValueError, match="two sources are named 'orders'"):
        Settings().all_sources()


def test_the_operator_tenant_cannot_be_a_source_s_default() -> None:
    with pytest.raises(ValidationError, match="reserved for operator events"):
        KafkaSource.model_validate({**KAFKA, "default_tenant": "herald-operator"})


def test_sasl_needs_a_password_and_passes_it_to_aiokafka() -> None:
    with pytest.raises(ValidationError, match="SASL needs"):
        KafkaSource.model_validate({**KAFKA, "security_protocol": "SASL_PLAINTEXT"})
    source = KafkaSource.model_validate(
        {
            **KAFKA,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "herald",
            "sasl_password": "pw-123",
        }
    )
    options = consumer_options(source)
    assert (options["sasl_plain_password"], options["enable_auto_commit"]) == ("pw-123", False)
    assert "pw-123" not in repr(source)
    assert redacted("auth failed for pw-123", ["pw-123"]) == "auth failed for ***"


def test_ingest_runs_alone() -> None:
    assert parse_roles("ingest") == {INGEST}
    assert INGEST not in parse_roles("all")
    with pytest.raises(ValueError, match="process of its own"):
        parse_roles("router,ingest")


def _check(
    record: bytes, *, tenants: frozenset[str] = frozenset({"dev"})
) -> tuple[str, dict[str, Any]]:
    ingester = Ingester(Settings(), None, None, tenants.__contains__)  # type: ignore[arg-type]
    source = KafkaSource.model_validate({**KAFKA, "default_tenant": "dev"})
    event, why = ingester.check(source, record, IdSource(), "2026-12-02T00:00:00.000Z")
    if event is not None:
        return "accepted", event
    assert why is not None
    return why.reason, why.errors


def test_a_record_is_checked_by_the_api_s_own_code() -> None:
    body = {"type": "order.created", "data": {"n": 1}, "colour": "red"}
    reason, errors = _check(orjson.dumps(body))
    _, api_errors = accept(body, "dev", Settings().max_event_bytes, IdSource(), "now")
    assert (reason, errors) == ("invalid", api_errors)
    assert list(errors) == ["colour"]
    status, event = _check(orjson.dumps({"type": "order.created", "data": {}, "id": "evt_1"}))
    assert (status, event["tenant"], event["deduplicate"]) == ("accepted", "dev", True)


def test_the_tenant_is_the_record_s_or_the_source_s_and_must_exist() -> None:
    record = {"type": "order.created", "data": {}, "tenant": "acme"}
    assert _check(orjson.dumps(record))[0] == "tenant"
    reason, event = _check(orjson.dumps(record), tenants=frozenset({"acme"}))
    assert (reason, event["tenant"]) == ("accepted", "acme")
    for not_an_object in (b"[1, 2]", b"nope", b""):
        reason, errors = _check(not_an_object)
        assert (reason, list(errors)) == ("not_json", ["body"])


def test_a_reject_carries_the_400_body_and_a_bounded_record() -> None:
    source = KafkaSource.model_validate(KAFKA)
    reason, errors = _check(orjson.dumps({"type": "x", "data": {}}))
    reader = SourceReader(source, lambda record: record[0], lambda record: record[1])
    big = (b"y" * 100_000, {"topic": "t", "partition": 0, "offset": 7})
    reject = orjson.loads(reject_record(reader, big, Rejection(reason, errors), "now"))
    assert reject["error"]["status"] == 400 and list(reject["error"]["errors"]) == ["type"]
    assert reject["record_truncated"] is True and len(reject["record"]) == 64 * 1024
    assert reject["position"] == {"topic": "t", "partition": 0, "offset": 7}
