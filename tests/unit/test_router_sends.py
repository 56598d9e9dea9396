"""The router's sends: a failed send is sent again; a broker that stays away ends the
process instead of letting the batch be acknowledged (issue 12, B8)."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import pytest
from aiokafka.errors import KafkaTimeoutError

from pipeline.agents import router
from pipeline.app import create_app
from pipeline.settings import Settings
from pipeline.supervision import EXIT_BROKER_UNREACHABLE


class _Topic:
    """A deliveries topic whose produce path fails: `refuse` sends raise at once, and
    `fail` more come back with a failed future; then the broker takes everything."""

    def __init__(self, refuse: int = 0, fail: int = 0) -> None:
        self.refuse, self.fail = refuse, fail
        self.taken: list[tuple[bytes, bytes, Any]] = []

    async def send(self, key: bytes, value: bytes, headers: Any) -> asyncio.Future[Any]:
        if self.refuse:
            self.refuse -= 1
            raise KafkaTimeoutError()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(KafkaTimeoutError())
        else:
            self.taken.append((key, value, headers))
            future.set_result(None)
        return future


class _Exited(Exception):
    pass


def _exit() -> NoReturn:
    raise _Exited


RECORDS = [(f"k{n}".encode(), f"v{n}".encode(), None) for n in range(5)]


async def test_failed_sends_are_sent_again_until_the_broker_takes_them() -> None:
    topic = _Topic(refuse=2, fail=4)
    await router.send_all(topic, RECORDS, give_up_s=30, on_give_up=_exit)
    assert sorted(topic.taken) == sorted(RECORDS)


async def test_a_broker_that_stays_away_ends_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router, "SEND_MAX_BACKOFF_S", 0.01)
    topic = _Topic(fail=10**9)
    with pytest.raises(_Exited):
        await router.send_all(topic, RECORDS, give_up_s=0.2, on_give_up=_exit)
    assert topic.taken == []


def test_giving_up_exits_the_process_non_zero() -> None:
    """The real `exit_process`: no clean shutdown that could acknowledge the batch."""
    import subprocess
    import sys

    code = (
        "import asyncio\n"
        "from tests.unit.test_router_sends import RECORDS, _Topic\n"
        "from pipeline.agents import router\n"
        "router.SEND_MAX_BACKOFF_S = 0.01\n"
        "asyncio.run(router.send_all(_Topic(fail=10**9), RECORDS, give_up_s=0.1))\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_BROKER_UNREACHABLE != 0, done.stderr
    assert b"survived" not in done.stdout


def test_the_router_producer_does_not_linger(tmp_path: Any) -> None:
    """A batch waits for its deliveries' acknowledgements: a linger would be added to every
    event's publish → delivered latency (issue 13, item 5)."""
    assert create_app(Settings(worker_data_dir=tmp_path)).conf.producer_linger == 0
    app = create_app(Settings(worker_data_dir=tmp_path, router_linger_ms=3))
    assert app.conf.producer_linger == 0.003
