"""Delivery does not depend on the index: a worker starts and delivers while PostgreSQL is
unreachable, and its /readyz says the index is degraded (not that the worker is unready)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    ROOT,
    TEST_DATA,
    Services,
    Stack,
    _wait_ready,
    herald_env,
)
from tests.support import Receiver, eventually

PORT = API_PORT + 8
NOWHERE = "postgresql://herald@127.0.0.1:1/herald"  # nothing listens on port 1


def _get(path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _attempts_made() -> float:
    _, text = _get("/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("herald_delivery_attempts_total")
    )


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(ROOT / ".venv/bin/herald"), "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_worker_starts_and_delivers_while_postgresql_is_down(
    services: Services, stack: Stack, api: Api, receiver: Receiver, tmp_path: Path
) -> None:
    log = TEST_DATA / "logs" / "worker-without-index.log"
    env = herald_env(
        services,
        HERALD_DATABASE_URL=NOWHERE,
        HERALD_WORKER_PORT=str(PORT),
        HERALD_WORKER_DATA_DIR=str(tmp_path / "worker"),
    )
    process = _start_worker(env, log)
    destinations: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(_wait_ready, process, PORT, log, 120)
        status, body = await asyncio.to_thread(_get, "/readyz")
        assert status == 200
        assert orjson.loads(body)["checks"] == {
            "kafka": "ok",
            "database": "degraded",
            "delivery_loop": "ok",
            "index_loop": "degraded",
        }
        # Destinations on several partitions, so this worker holds some of them once the
        # group has rebalanced; it delivers without an index.
        for n in range(8):
            destinations.append(await api.create_webhook(f"{receiver.url}/n{n}", ["no_index.*"]))

        async def delivered_by_it() -> float:
            await api.publish("no_index.ping")
            return await asyncio.to_thread(_attempts_made)

        await eventually(delivered_by_it, timeout_s=90, interval_s=0.5, what="its deliveries")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 60)
        # Known and open: after a second worker leaves the group this quickly, the session
        # worker's Faust table recovery can wait for changelog records that never come (seen
        # once in four runs: its fold stopped, so every later create timed out). A fresh
        # process recovers; restart it so later tests do not inherit the hang.
        await asyncio.to_thread(stack.kill_and_restart_worker)
        for destination in destinations:
            await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
