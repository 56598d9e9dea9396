"""topics.yaml → topic specs, and `apply`: create what is missing, raise partition counts
where that is safe, set configs, report what it cannot fix."""

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
TENANT_CHANGES = "tenant-changes"

# Pairs joined by partition (a table and the stream it is kept beside): equal counts always.
CO_PARTITIONED = ((EVENTS, EVENT_IDS), (DESTINATION_CHANGES, DESTINATIONS))
# Never given more partitions by `apply`: the fold agent reads a destination's current record
# from the partition its changes hash to, so a change hashed to a new partition would fold
# onto nothing, and the old record would stay in the compacted topic beside the new one.
# tenant-changes is folded in its one total order by every API process (api/tenant_view.py).
NOT_RAISED = frozenset({DESTINATION_CHANGES, DESTINATIONS, TENANT_CHANGES})


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
    if TENANT_CHANGES in by_name and by_name[TENANT_CHANGES].partitions != 1:
        raise ValueError(f"{path}: {TENANT_CHANGES} must have one partition (one total order)")
    return specs


def _config(entry: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (entry.get("config") or {}).items()}


@dataclass
class ApplyReport:
    """What `apply` did, and what it found but could not fix."""

    created: list[str] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def plan_partitions(
    specs: list[TopicSpec], current: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Which existing topics to give more partitions (name → new count), and the partition
    differences `apply` cannot fix. Pure. `current`: the broker's counts (missing topics
    absent). A topic is never shrunk (Kafka cannot); one of NOT_RAISED is never raised;
    a co-partitioned pair is raised only together, so its counts stay equal."""
    raise_to: dict[str, int] = {}
    drift: dict[str, str] = {}
    for spec in specs:
        count = current.get(spec.name)
        if count is None or count == spec.partitions:
            continue
        if count > spec.partitions:
            drift[spec.name] = "Kafka cannot take partitions away"
        elif spec.name in NOT_RAISED:
            drift[spec.name] = "its records would move partition (README: Scaling out)"
        else:
            raise_to[spec.name] = spec.partitions
    for pair in CO_PARTITIONED:
        if any(name in drift for name in pair):
            for name in pair:
                if raise_to.pop(name, None) is not None:
                    drift[name] = "co-partitioned with a topic that cannot be changed"
    wanted = {s.name: s.partitions for s in specs}
    problems = [
        f"{name}: has {current[name]} partitions, topics.yaml says {wanted[name]}: {why}"
        for name, why in drift.items()
    ]
    return raise_to, problems


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
        counts = {s.name: len(existing[s.name]["partitions"]) for s in present}
        raise_to, report.drift = plan_partitions(specs, counts)
        if raise_to:
            admin.create_partitions(raise_to)
            report.raised += sorted(raise_to)
        to_alter = []
        for spec in present:
            current = {k: str(v["value"]) for k, v in described.get(spec.name, {}).items()}
            changed = {k: v for k, v in spec.config.items() if current.get(k) != v}
            if changed:
                to_alter.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, changed))
                report.reconfigured.append(spec.name)
            elif counts[spec.name] == spec.partitions:
                report.unchanged.append(spec.name)
        if to_alter:
            admin.alter_configs(to_alter)
    finally:
        admin.close()
    return report
