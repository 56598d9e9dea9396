"""`herald dlq list|show|redrive` against the real broker and index, on dead letters the
pipeline made (a receiver answering 500 until the test stack's 3 retries are used up)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline import ids
from tests.integration.api_client import Api
from tests.integration.conftest import DEV_KEY, ENCRYPTION_KEY, Services, herald_env
from tests.support import Receiver, eventually

ROOT = Path(__file__).resolve().parents[2]


async def _herald(services: Services, *args: str) -> tuple[int, str]:
    """Run `herald dlq …` as an operator would; its exit status and stdout."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / ".venv/bin/herald"), "dlq", *args],
        env=herald_env(services),
        capture_output=True,
        timeout=60,
        check=False,
    )
    print(done.stderr.decode())  # shown with a failing test's output
    return done.returncode, done.stdout.decode()


async def _failed(api: Api, destination_id: str, event_id: str) -> dict[str, object]:
    async def found() -> dict[str, object] | None:
        _, page = await api.call(
            "GET", f"/v2/event-destinations/{destination_id}/event-deliveries?status=failed"
        )
        return next((d for d in page["data"] if d["event_id"] == event_id), None)

    delivery: dict[str, object] = await eventually(found, timeout_s=30, what="a dead letter")
    return delivery


async def test_list_show_and_redrive_dead_letters_of_one_destination(
    api: Api, receiver: Receiver, services: Services
) -> None:
    receiver.status = 500
    event_type = f"dlq_check.{ids.new_id('t').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/dlq", [event_type])
    other_type = f"{event_type}_other"
    other = await api.create_webhook(f"{receiver.url}/other", [other_type])
    first = await api.publish(event_type, {"secret_looking": "not printed in list"})
    delivery = await _failed(api, destination["id"], first)
    await _failed(api, other["id"], await api.publish(other_type))

    async def listed() -> str | None:  # the DLQ record may follow the indexed attempt
        status, out = await _herald(services, "list", "--destination", destination["id"])
        assert status == 0, out
        return out if out.strip() != "0 dead letters" else None

    out = await eventually(listed, timeout_s=30, what="the dead letter listed")
    [row, total] = out.strip().splitlines()
    when, tenant, destination_id, listed_type, delivery_id, reason = row.split("\t")
    assert (tenant, destination_id, listed_type, delivery_id) == (
        "dev", destination["id"], event_type, delivery["id"],
    )  # fmt: skip
    assert when.startswith("20") and reason.startswith("retries exhausted")
    assert reason.endswith(": HTTP 500"), reason  # the last attempt's error
    assert total == "1 dead letters"
    for secret in (DEV_KEY, ENCRYPTION_KEY, destination["webhook"]["secret"], "not printed"):
        assert secret not in out
    # The other destination's, by type and tenant; none of another tenant's.

    async def listed_other() -> str | None:
        _, out = await _herald(services, "list", "--type", other_type, "--tenant", "dev")
        return out if other["id"] in out else None

    out = await eventually(listed_other, timeout_s=30, what="the other dead letter listed")
    assert destination["id"] not in out
    status, out = await _herald(services, "list", "--tenant", "other", "--type", other_type)
    assert out.strip() == "0 dead letters"
    # --since by the time a record was dead-lettered (its broker timestamp).
    hour_s = 3600
    for offset_s, count in ((-hour_s, 1), (hour_s, 0)):
        since = datetime.fromtimestamp(time.time() + offset_s, UTC).isoformat()
        args = ("list", "--destination", destination["id"], "--since", since)
        status, out = await _herald(services, *args)
        assert (status, out.strip().splitlines()[-1]) == (0, f"{count} dead letters"), out
    status, out = await _herald(services, "list", "--since", "yesterday")
    assert status == 2  # argparse's usage error, before anything is read

    status, out = await _herald(services, "show", str(delivery["id"]))
    assert status == 0, out
    assert f'"id": "{delivery["id"]}"' in out and '"dead_letter_reason"' in out
    assert out.splitlines()[-1].startswith("body: {") and first in out.splitlines()[-1]
    status, out = await _herald(services, "show", "evdl_none")
    assert status == 1 and "no dead letter" in out

    receiver.status = 200
    receiver.requests.clear()
    status, out = await _herald(
        services, "redrive", "--destination", destination["id"], "--dry-run"
    )
    assert status == 0 and "1 dead letters would be redriven" in out, out
    assert receiver.requests == []
    status, out = await _herald(services, "redrive", "--destination", destination["id"])
    assert status == 0, out
    assert out.strip().endswith("redriven 1, skipped 0 (no longer failed in the index)"), out
    await eventually(lambda: receiver.bodies("/dlq"), what="the redriven delivery")
    assert [b["id"] for b in receiver.bodies("/dlq")] == [first]
    assert receiver.requests[0].headers["webhook-id"] == delivery["id"]

    async def succeeded() -> bool:
        _, body = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
        return bool(body["status"] == "succeeded")

    await eventually(succeeded, timeout_s=30, what="the redriven delivery indexed")
    # Redriven once: the dead letter is still in the topic, but no longer failed.
    status, out = await _herald(services, "redrive", "--destination", destination["id"])
    assert out.strip().endswith("redriven 0, skipped 1 (no longer failed in the index)"), out
    assert len(receiver.bodies("/dlq")) == 1
