"""Starting a finished delivery's chain again: the record that a manual retry
(api/routes/deliveries.py), a recovery (api/recovery.py) and `herald dlq redrive`
(api/dead_letters.py) put back on `deliveries`, where the delivery runner takes it like
any routed delivery (same delivery id, so receivers can deduplicate on `webhook-id`).

The caller first claims the delivery in the index (api/chains.py), so no second chain runs
beside a live one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline import delivery_record, ids, policy
from pipeline.timeutil import now_iso
from pipeline.topics import DELIVERIES

# What a dead letter's head carries that a new chain must not: where the last one ended.
ENDED_CHAIN_KEYS = (
    "dead_letter_reason", "dead_lettered_at", "last_error", "skipped", "manual_retry",
)  # fmt: skip


def from_index(
    delivery: Mapping[str, Any],
    envelope: Mapping[str, Any],
    tenant: str,
    generation: str | None,
    *,
    asked_now: bool,
) -> tuple[dict[str, Any], bytes]:
    """The head and body of a new chain of an indexed delivery (`delivery` as
    api.index.present_delivery shows it, `envelope` its event as present_event does).

    `asked_now`: the user asked for this one attempt now (a manual retry), so it passes its
    destination's open circuit; a recovery's deliveries do not (they wait like any other).
    """
    head = {
        "id": delivery["id"],
        "event": {k: envelope[k] for k in delivery_record.EVENT_HEAD_KEYS},
        "tenant": tenant,
        "destination_id": delivery["destination_id"],
        "destination_generation": generation,
        "attempt": 0,
        "due_at": None,
        "routed_at": now_iso(),
        policy.RESTARTED: True,
    }
    if asked_now:
        head["manual_retry"] = True
    return head, orjson.dumps(envelope)


def from_dead_letter(record: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The head and body of a new chain of a dead letter (`record` as
    pipeline.delivery_record.decode returns it): its first attempt again, due now."""
    head = {
        k: v for k, v in record.items() if k not in ENDED_CHAIN_KEYS and k != delivery_record.BODY
    }
    head.update({"attempt": 0, "due_at": None, "routed_at": now_iso(), policy.RESTARTED: True})
    return head, bytes(record[delivery_record.BODY])


Record = tuple[Mapping[str, Any], bytes]  # a head and its body


async def send(producer: AIOKafkaProducer, records: Iterable[Record]) -> None:
    """Append the records to `deliveries` in order, keyed like the router keys them (one
    partition per destination, so records sent in order are attempted in that order), and
    wait for the broker to confirm them all; raises KafkaError."""
    confirmations = []
    for head, body in records:
        key = ids.scoped(str(head["tenant"]), str(head["destination_id"])).encode()
        frame = delivery_record.frame(head, body)
        confirmations.append(await producer.send(DELIVERIES, frame, key=key))
    await asyncio.gather(*confirmations)
