"""topics.yaml parsing, ids, and the outbound address policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import ids
from pipeline.outbound import AddressPolicy
from pipeline.settings import Settings
from pipeline.topics import DESTINATION_CHANGES, DESTINATIONS, load_specs


def test_topics_file_declares_every_topic_the_design_names() -> None:
    specs = {s.name: s for s in load_specs(Settings().topics_file)}
    for name in (
        "events",
        "destination-changes",
        "destinations",
        "deliveries",
        "delivery-attempts",
        "deliveries.dlq",
    ):
        assert name in specs
    assert [n for n in specs if n.startswith("deliveries.retry.")] == [
        f"deliveries.retry.{n}" for n in range(1, 11)
    ]
    assert specs[DESTINATIONS].config["cleanup.policy"] == "compact"
    assert specs["events"].config["retention.ms"] == str(30 * 24 * 3600 * 1000)


def test_copartitioning_is_enforced(tmp_path: Path) -> None:
    text = (
        Settings()
        .topics_file.read_text()
        .replace(
            "partitions: 3              # must equal", "partitions: 5              # must equal"
        )
    )
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{DESTINATION_CHANGES} and {DESTINATIONS}"):
        load_specs(path)


def test_derived_ids_are_stable_and_distinct() -> None:
    event = ids.new_id(ids.EVENT)
    first = ids.derived_id(ids.DELIVERY, event, "evtd_a")
    assert first == ids.derived_id(ids.DELIVERY, event, "evtd_a")
    assert first != ids.derived_id(ids.DELIVERY, event, "evtd_b")
    assert first.startswith("evdl_")
    assert ids.derived_id(ids.DELIVERY, "evt_custom-id", "evtd_a").startswith("evdl_")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "fd00::1",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(address)


def test_public_addresses_and_allowlist() -> None:
    assert AddressPolicy().permits("93.184.216.34")
    assert AddressPolicy().permits("2606:2800:220:1:248:1893:25c8:1946")
    allow = AddressPolicy(["127.0.0.1/32"])
    assert allow.permits("127.0.0.1")
    assert not allow.permits("127.0.0.2")
