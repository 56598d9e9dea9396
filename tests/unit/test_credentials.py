"""Credential changes (issue 12, C14): merged field by field, cleared when the server
changes, and compare-and-set in the fold so a stale merge cannot overwrite a newer one."""

from __future__ import annotations

from typing import Any

from pipeline.credentials import merged, server_changed
from pipeline.destinations import fold

RABBIT = {"server_url": "rabbit-a.example:5672", "exchange": "ev"}
RABBIT_CREDS = {"username": "app", "password": "pw"}
KAFKA = {"bootstrap_servers": "k1.example:9092,k2.example:9092", "topic": "t"}
HOOK = {"url": "https://a.example/h", "custom_headers": ["Authorization"]}
HOOK_CREDS = {"secret": "whsec_x", "custom_headers": {"Authorization": "Bearer t"}}


def test_rabbitmq_moved_to_another_host_does_not_take_the_old_login() -> None:
    config, credentials = merged(
        "rabbitmq", (RABBIT, RABBIT_CREDS), {**RABBIT, "server_url": "rabbit-b.example"}, {}
    )
    assert credentials == {}
    assert config["server_url"] == "rabbit-b.example"


def test_rabbitmq_same_host_keeps_the_login_and_takes_a_new_password() -> None:
    same = {**RABBIT, "server_url": "amqp://RABBIT-A.example", "exchange": "other"}
    _, kept = merged("rabbitmq", (RABBIT, RABBIT_CREDS), same, {})
    assert kept == RABBIT_CREDS
    _, changed = merged("rabbitmq", (RABBIT, RABBIT_CREDS), same, {"password": "new"})
    assert changed == {"username": "app", "password": "new"}


def test_rabbitmq_new_host_with_its_own_login_uses_that_one() -> None:
    new = {**RABBIT, "server_url": "rabbit-b.example"}
    _, credentials = merged("rabbitmq", (RABBIT, RABBIT_CREDS), new, {"username": "b"})
    assert credentials == {"username": "b"}


def test_kafka_pointed_at_another_cluster_drops_sasl() -> None:
    plaintext = {**KAFKA, "bootstrap_servers": "plain.example:9092"}
    _, credentials = merged("kafka", (KAFKA, RABBIT_CREDS), plaintext, {})
    assert credentials == {}
    reordered = {**KAFKA, "bootstrap_servers": "k2.example:9092,K1.example:9092"}
    assert not server_changed("kafka", KAFKA, reordered)
    assert merged("kafka", (KAFKA, RABBIT_CREDS), reordered, {})[1] == RABBIT_CREDS


def test_webhook_to_another_origin_keeps_the_secret_and_drops_custom_headers() -> None:
    moved = {"url": "https://b.example/h"}
    config, credentials = merged("webhook", (HOOK, HOOK_CREDS), moved, {})
    assert credentials == {"secret": "whsec_x"}
    assert "custom_headers" not in config
    for other in ("http://a.example/h", "https://a.example:8443/h"):
        assert server_changed("webhook", HOOK, {"url": other})


def test_webhook_same_origin_keeps_header_values_and_their_names() -> None:
    config, credentials = merged("webhook", (HOOK, HOOK_CREDS), {"url": "https://A.example/x"}, {})
    assert credentials == HOOK_CREDS
    assert config["custom_headers"] == ["Authorization"]
    cleared, none = merged(
        "webhook", (HOOK, HOOK_CREDS), {"url": HOOK["url"]}, {"custom_headers": {}}
    )
    assert none["custom_headers"] == {} and "custom_headers" not in cleared


def test_other_types_keep_credentials_whatever_changes() -> None:
    sqs = {"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/a", "region": "eu-west-1"}
    moved = {**sqs, "queue_url": "https://sqs.us-east-1.amazonaws.com/1/b"}
    assert merged("aws_sqs", (sqs, {"key": "k", "secret": "s"}), moved, {})[1] == {
        "key": "k",
        "secret": "s",
    }


# -- the fold's compare-and-set ------------------------------------------------------------------


def change(op: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"op": op, "change_id": f"chg_{n}", "at": f"2026-01-01T00:00:0{n}Z", **extra}


def created() -> dict[str, Any]:
    fields = {"tenant": "t", "name": "n", "type": "webhook", "events": ["*"], "sealed": "s0"}
    return fold(None, {**change("create", 1, fields=fields), "destination_id": "evtd_1"})


def test_a_credential_change_based_on_a_replaced_version_is_refused() -> None:
    record = created()
    base = record["sealed_version"]
    rotated = fold(record, change("update", 2, fields={"sealed": "rotated"}, sealed_base=base))
    assert rotated["change_ok"] and rotated["sealed_version"] == base + 1
    # A PATCH that merged against the record before the rotation:
    stale = fold(rotated, change("update", 3, fields={"sealed": "stale"}, sealed_base=base))
    assert stale["change_ok"] is False
    assert stale["sealed"] == "rotated"
    redone = fold(stale, change("update", 4, fields={"sealed": "merged"}, sealed_base=base + 1))
    assert redone["change_ok"] and redone["sealed"] == "merged"


def test_changes_without_credentials_neither_conflict_nor_move_the_version() -> None:
    record = created()
    renamed = fold(record, change("update", 2, fields={"name": "x"}, sealed_base=99))
    assert renamed["change_ok"] and renamed["sealed_version"] == record["sealed_version"]


def test_a_record_from_before_versions_starts_at_zero() -> None:
    legacy = {k: v for k, v in created().items() if k != "sealed_version"}
    updated = fold(legacy, change("update", 2, fields={"sealed": "n"}, sealed_base=0))
    assert updated["change_ok"] and updated["sealed_version"] == 1
