"""Scenario `source` (issue 18): events/s ingested from a Kafka source by the ingest role.

N records (100,000 quick, 500,000 full; about 350 bytes, as the other scenarios') are
written to a topic of their own, `bench-source` (12 partitions), standing in for the
platform's. The stack's worker is stopped meanwhile, so that routing what is ingested does
not share the two cores with the measured process (it routes the backlog afterwards).

- ceiling: bench/source_ceiling.py, a bare aiokafka consume → produce → commit loop.
- herald: `herald worker --role ingest` with the topic as its one Kafka source (validation,
  the tenant check, the API's batched produce to `events`, a commit per acknowledged batch).

Both are measured the same way: their consumer group's committed offsets, from the first
commit to the one that covers every record, so start-up is not counted; CPU per event is
the process's own over the same span. `--profile` records the ingest process with py-spy
(bench/results/profile/source/).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.context import Bench, Outcome, Row
from bench.profile import Profiler
from bench.progress import progress
from bench.scenarios.router import (
    WORKER_READY_S,
    follow_commits,
    padded,
    start_worker,
    stop_worker,
    worker_ready,
)
from bench.stack import CEILING_TOPIC, HERALD, PYTHON, ROOT, TENANT, terminate

TOPIC = "bench-source"
PARTITIONS = 12
EVENT_TYPE = "source.bench"
HERALD_GROUP = "herald-source-bench"
CEILING_GROUP = "bench-source-ceiling"
MAX_BATCH = 2000
TIMEOUT_S = 600.0
# The ingest process's HTTP port: past the stack's worker and the ports it adds for more.
INGEST_PORT_AFTER_WORKER = 20


async def run(bench: Bench) -> Outcome:
    """The ceiling, then Herald's ingest, over the same records; the worker runs again after."""
    count = bench.size(100_000, 500_000)
    outcome = Outcome("source")
    outcome.settings = {"events": count, "event_bytes": 350, "max_batch": MAX_BATCH}
    await _preload(bench, count)
    stop_worker(bench)
    try:
        ceiling = _start_ceiling(bench, count)
        outcome.figures["ceiling"] = await _measure(bench, ceiling, CEILING_GROUP, count)
        terminate(ceiling)
        ingest = _start_ingest(bench)
        profiler = _profiler(bench, ingest)
        try:
            outcome.figures["herald"] = await _measure(bench, ingest, HERALD_GROUP, count)
        finally:
            if profiler is not None:
                profiler.stop()
            terminate(ingest)
    finally:
        start_worker(bench)
    herald, bare = outcome.figures["herald"], outcome.figures["ceiling"]
    outcome.rows.append(
        Row(
            "source",
            "Kafka source → events",
            herald["events_per_s"],
            "events/s",
            bare["events_per_s"],
            f"vs bare aiokafka consume→produce→commit; ingest {herald['cpu_ms_per_event']} ms "
            f"CPU/event (bare {bare['cpu_ms_per_event']}); load {herald['load_average_1m']:.2f}",
        )
    )
    await worker_ready(bench, WORKER_READY_S)
    return outcome


async def _preload(bench: Bench, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bench.stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    records = [
        (str(n).encode(), orjson.dumps({"type": EVENT_TYPE, "data": padded(n)}))
        for n in range(count)
    ]
    with progress("source: preload", count) as bar:
        await bench.cluster.produce(TOPIC, records, bar.update_to)


def _start_ceiling(bench: Bench, count: int) -> subprocess.Popen[bytes]:
    args = ["--bootstrap", bench.stack.kafka_bootstrap, "--topic", TOPIC]
    args += ["--group", CEILING_GROUP, "--to", CEILING_TOPIC, "--count", str(count)]
    return _spawn(bench, [str(PYTHON), "-m", "bench.source_ceiling", *args], {}, "ceiling")


def _start_ingest(bench: Bench) -> subprocess.Popen[bytes]:
    source = {
        "name": "bench",
        "type": "kafka",
        "bootstrap_servers": bench.stack.kafka_bootstrap,
        "topic": TOPIC,
        "group_id": HERALD_GROUP,
        "default_tenant": TENANT,
        "max_batch": MAX_BATCH,
    }
    env = {
        "HERALD_SOURCES": json.dumps([source]),
        "HERALD_WORKER_PORT": str(bench.stack.ports.worker + INGEST_PORT_AFTER_WORKER),
    }
    return _spawn(bench, [str(HERALD), "worker", "--role", "ingest"], env, "ingest")


def _spawn(
    bench: Bench, command: list[str], env: dict[str, str], name: str
) -> subprocess.Popen[bytes]:
    with (bench.stack.logs / f"source-{name}.log").open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**bench.stack.herald_env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def _measure(
    bench: Bench, process: subprocess.Popen[bytes], group: str, count: int
) -> dict[str, Any]:
    """Follow `group`'s committed offsets on the source topic from its first commit to all."""
    figures = await follow_commits(
        bench, process, group, TOPIC, 0, count, f"source: {group}", TIMEOUT_S
    )
    return {"events": count, **figures}


def _profiler(bench: Bench, ingest: subprocess.Popen[bytes]) -> Profiler | None:
    """With `--profile`, py-spy on the ingest process (its whole life)."""
    if not bench.profile:
        return None
    profiler = Profiler({"ingest": ingest.pid}, bench.stack.data / "profile" / "source")
    profiler.start()
    return profiler
