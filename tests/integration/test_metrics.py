"""/metrics of the API and the worker during an end-to-end run, and the processes' logs.

Counters are per process and shared with the other tests of the session, so each check
reads them before and after and compares the difference; every test uses an event type of
its own, so only its own destinations receive its events.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import Counter
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from pipeline.ids import new_id
from pipeline.timeutil import now_iso
from tests.integration.api_client import Api
from tests.integration.conftest import ENCRYPTION_KEY, Stack
from tests.support import Receiver, eventually

Samples = list[tuple[str, dict[str, str], float]]
EVENTS = 7
LOG_FIELDS = {"timestamp", "level", "logger", "message", "service"}


async def scrape(base_url: str) -> Samples:
    """Every sample a process exports: (name, labels, value)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 if none)."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much `name` (with `labels`) moved between two scrapes."""
    return total(after, name, **labels) - total(before, name, **labels)


def _unique_type(prefix: str) -> str:
    return f"{prefix}.{new_id('t_').lower()}"


async def test_counters_move_by_exactly_what_was_sent(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    event_type = _unique_type("metrics_check")
    await api.create_webhook(f"{receiver.url}/metrics", [event_type])
    api_before = await scrape(stack.api_url)
    worker_before = await scrape(stack.worker_url)

    for n in range(EVENTS):
        await api.publish(event_type, {"n": n})
    api_after = await scrape(stack.api_url)
    await eventually(lambda: len(receiver.requests) >= EVENTS, what="every delivery")

    async def worker_counted() -> Samples | None:
        samples = await scrape(stack.worker_url)
        moved = delta(
            worker_before,
            samples,
            "herald_delivery_attempts_total",
            type="webhook",
            outcome="success",
        )
        return samples if moved >= EVENTS else None

    worker_after: Samples = await eventually(worker_counted, what="the worker's counters")

    published = delta(api_before, api_after, "herald_events_published_total", outcome="accepted")
    assert published == EVENTS
    requests = delta(
        api_before,
        api_after,
        "herald_api_requests_total",
        route="/v2/events",
        method="POST",
        status_class="2xx",
    )
    assert requests == EVENTS
    # A request to another path would be a stale destination of an earlier test that
    # happens to point at this receiver's port: it would be a success too.
    assert {r.path for r in receiver.requests} == {"/metrics"}
    # Successes only: earlier tests' destinations subscribed to "*" fail on these events.
    moved = {
        name: delta(worker_before, worker_after, name, type="webhook", **labels)
        for name, labels in (
            ("herald_delivery_attempts_total", {"outcome": "success", "tier": "0"}),
            ("herald_delivery_latency_seconds_count", {"outcome": "success"}),
            ("herald_delivery_end_to_end_seconds_count", {}),
        )
    }
    print(f"API events published +{published:g}, API POST /v2/events 2xx +{requests:g}")
    print(f"worker, webhook type: {moved}")
    assert set(moved.values()) == {EVENTS}, moved


async def test_worker_samples_its_state(api: Api, stack: Stack) -> None:
    await api.create_webhook("https://example.com/sampled", [_unique_type("sampled")])

    async def sampled() -> Samples | None:
        samples = await scrape(stack.worker_url)
        ready = total(samples, "herald_destinations", type="webhook") >= 1 and any(
            name == "herald_consumer_lag_records" for name, _, _ in samples
        )
        return samples if ready else None

    samples: Samples = await eventually(sampled, timeout_s=30, what="sampled gauges")
    lag_series = {
        (labels["consumer"], labels["topic"])
        for name, labels, _ in samples
        if name == "herald_consumer_lag_records"
    }
    assert {("agents", "events"), ("sinks", "deliveries"), ("indexer", "events")} <= lag_series
    tiers = {labels["tier"] for name, labels, _ in samples if name == "herald_retry_held_records"}
    assert tiers == {"1", "2", "3"}  # the stack runs with 3 retry tiers
    assert any(name == "herald_dlq_records" for name, _, _ in samples)


def _log_entries(stack: Stack) -> list[dict[str, Any]]:
    entries = []
    # The stack's own logs, written anew each session (other *.log files may be older).
    for path in (stack.logs / "api.log", stack.logs / "worker.log"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError as exc:
                    raise AssertionError(f"{path.name}:{number} is not JSON: {line!r}") from exc
                assert entry.keys() >= LOG_FIELDS, f"{path.name}:{number}: {line}"
                entries.append(entry)
    return entries


def _summed_counts(entries: list[dict[str, Any]], since: str) -> Counter[str]:
    """The outcomes the worker's summary lines logged at or after `since` add up to."""
    total: Counter[str] = Counter()
    for entry in entries:
        if "counts" in entry and entry["timestamp"] >= since:
            total.update(entry["counts"])
    return total


async def test_logs_are_json_lines_without_secrets(api: Api, stack: Stack) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    failing_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    event_type = _unique_type("secret_check")
    good = await Receiver().start()
    bad = await Receiver(status=500).start()
    started = now_iso()
    try:
        for url, key in ((good.url, secret), (bad.url, failing_secret)):
            await api.create_webhook(
                f"{url}/s", [event_type], webhook={"url": f"{url}/s", "secret": key}
            )
        event_id = await api.publish(event_type, {"hello": "world"})
        await eventually(lambda: good.requests, what="the delivery")
        # The secret was really in use: it signed the delivery.
        Webhook(secret).verify(good.requests[0].body, good.requests[0].headers)
        await eventually(lambda: len(bad.requests) >= 4, what="the failing attempts")

        def summarized() -> list[dict[str, Any]] | None:
            entries = _log_entries(stack)
            counts = _summed_counts(entries, started)
            # Other tests' deliveries may be counted too: at least this test's outcomes.
            enough = counts["delivered"] >= 1 and counts["failed"] >= 4
            return entries if enough and counts["dead_lettered"] >= 1 else None

        # One summary line per 10 s of outcomes: the dead letter may fall in a second one.
        entries = await eventually(summarized, timeout_s=40, what="the delivery summaries")
    finally:
        await good.stop()
        await bad.stop()
    summaries = [e for e in entries if "counts" in e and e["timestamp"] >= started]
    assert {(e["level"], e["logger"]) for e in summaries} == {("INFO", "pipeline.outcome_log")}
    assert _summed_counts(entries, started)["retried"] >= 3
    # The stack logs at INFO: each delivery's own outcome line is DEBUG, so not written.
    assert not [e for e in entries if e.get("event_id") == event_id and "outcome" in e]
    for path in stack.logs.glob("*.log"):
        text = path.read_text()
        for needle in (secret, failing_secret, stack.api_key, ENCRYPTION_KEY):
            assert needle not in text, f"{path.name} contains a secret"
        for key in (secret, failing_secret):
            assert key.removeprefix("whsec_") not in text, f"{path.name} contains a secret"
