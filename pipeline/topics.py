"""topics.yaml → topic specs, and `apply`: create what is missing, report what differs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EVENTS = "events"
DESTINATION_CHANGES = "destination-changes"
DESTINATIONS = "destinations"
DELIVERIES = "deliveries"
ATTEMPTS = "delivery-attempts"
DLQ = "deliveries.dlq"
EVENT_IDS = "event-ids"


def retry_topic(tier: int) -> str:
    """The topic of retry tier `tier` (1-based)."""
    return f"deliveries.retry.{tier}"


@dataclass(frozen=True)
class TopicSpec:
    """One topic as topics.yaml declares it."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def load_specs(path: Path) -> list[TopicSpec]:
    """Read topics.yaml into specs, retry tiers expanded."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    replication = int(doc.get("replication_factor", 1))
    specs = [
        TopicSpec(name, int(t["partitions"]), replication, _config(t))
        for name, t in doc["topics"].items()
    ]
    tiers = doc.get("retry_tiers") or {}
    specs += [
        TopicSpec(retry_topic(n), int(tiers["partitions"]), replication, _config(tiers))
        for n in range(1, int(tiers.get("count", 0)) + 1)
    ]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a topic is declared twice")
    by_name = {s.name: s for s in specs}
    if by_name[EVENTS].partitions != by_name[EVENT_IDS].partitions:
        raise ValueError(f"{path}: {EVENTS} and {EVENT_IDS} must have equal partitions")
    if by_name[DESTINATION_CHANGES].partitions != by_name[DESTINATIONS].partitions:
        raise ValueError(
            f"{path}: {DESTINATION_CHANGES} and {DESTINATIONS} must have equal partitions"
        )
    return specs


def _config(entry: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (entry.get("config") or {}).items()}


@dataclass
class ApplyReport:
    """What `apply` did, and what it found but could not fix."""

    created: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def apply(bootstrap: str, specs: list[TopicSpec]) -> ApplyReport:
    """Make the broker's topics match `specs` where Kafka allows; idempotent."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    report = ApplyReport()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="herald-topics")
    try:
        existing = {t["name"]: t for t in admin.describe_topics() if not t.get("error_code")}
        missing = [s for s in specs if s.name not in existing]
        if missing:
            admin.create_topics(
                {
                    s.name: {
                        "num_partitions": s.partitions,
                        "replication_factor": s.replication_factor,
                        "configs": s.config,
                    }
                    for s in missing
                },
                wait_for_metadata=True,
            )
            report.created += [s.name for s in missing]
        present = [s for s in specs if s.name in existing]
        if not present:
            return report
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
        )["topic"]
        to_alter = []
        for spec in present:
            partitions = len(existing[spec.name]["partitions"])
            if partitions != spec.partitions:
                report.drift.append(
                    f"{spec.name}: has {partitions} partitions, topics.yaml says {spec.partitions}"
                )
            current = {k: str(v["value"]) for k, v in described.get(spec.name, {}).items()}
            changed = {k: v for k, v in spec.config.items() if current.get(k) != v}
            if changed:
                to_alter.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, changed))
                report.reconfigured.append(spec.name)
            elif partitions == spec.partitions:
                report.unchanged.append(spec.name)
        if to_alter:
            admin.alter_configs(to_alter)
    finally:
        admin.close()
    return report
