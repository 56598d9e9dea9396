"""The runner's outcome log (pipeline/outcome_log.py): each delivery's line at DEBUG, and one
INFO summary per interval of outcomes, none while idle."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline import delivery_record
from pipeline.attempts import AttemptRecorder
from pipeline.outcome_log import OUTCOMES, OutcomeTally
from pipeline.retry import DeadLetter, Retry
from pipeline.sinks.base import DeliveryResult, RetryableError
from tests.support import eventually


class Producer:
    async def send_and_wait(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> None:
        return None


DELIVERY = {
    "id": "evdl_1",
    "event": {"id": "evt_1", "type": "a.b", "created_at": "x"},
    "tenant": "t",
    "destination_id": "evtd_1",
    "attempt": 0,
    delivery_record.BODY: b"{}",
}


def _summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pipeline.outcome_log"]


async def test_outcomes_are_summed_once_per_interval_and_idle_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    tally = OutcomeTally(interval_s=0.05)
    recorder = AttemptRecorder(Producer(), "due", give_up_s=1, tally=tally)  # type: ignore[arg-type]
    await recorder.success(DELIVERY, DeliveryResult(200), 1.0)
    await recorder.success(DELIVERY, DeliveryResult(200), 1.0)
    retry = Retry("deliveries.retry.1", 1, 0)
    await recorder.failure(DELIVERY, RetryableError("HTTP 503"), 1.0, retry)
    await recorder.retry(DELIVERY, retry)
    await recorder.failure(DELIVERY, RetryableError("HTTP 503"), 1.0, DeadLetter("x"))
    await recorder.dead_letter(DELIVERY, "x")
    await recorder.canceled(DELIVERY, "deleted")
    await eventually(lambda: _summaries(caplog), timeout_s=5, what="the summary line")
    [line] = _summaries(caplog)
    assert line.levelno == logging.INFO
    assert line.counts == {  # type: ignore[attr-defined]
        "delivered": 2,
        "failed": 2,
        "retried": 1,
        "dead_lettered": 1,
        "canceled": 1,
    }
    # At INFO, no line per delivery.
    assert [r for r in caplog.records if r.name == "pipeline.attempts"] == []
    assert tally.idle  # no timer left: an idle runner logs nothing more
    await recorder.success(DELIVERY, DeliveryResult(200), 1.0)
    tally.flush()
    assert _summaries(caplog)[-1].counts == {  # type: ignore[attr-defined]
        **dict.fromkeys(OUTCOMES, 0),
        "delivered": 1,
    }


async def test_each_delivery_has_its_line_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeline.attempts")
    recorder = AttemptRecorder(Producer(), "due", give_up_s=1)  # type: ignore[arg-type]
    await recorder.success(DELIVERY, DeliveryResult(200), 1.0)
    [line] = [r for r in caplog.records if r.name == "pipeline.attempts"]
    assert (line.levelno, line.getMessage(), line.delivery_id, line.outcome) == (  # type: ignore[attr-defined]
        logging.DEBUG,
        "delivered",
        "evdl_1",
        "success",
    )
    recorder.tally.flush()
