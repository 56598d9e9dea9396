"""What every source's consumer shares: connect, consume until the source fails, then
connect again with backoff, and say on /readyz whether the source answers.

A source that fails never stops the process: Herald's other sources, and the API, go on.
What goes wrong with Herald's own broker is not a source failure (HeraldUnavailable): it
ends `run`, and the process.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import ClassVar

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0


def redacted(text: str, secrets: list[str]) -> str:
    """`text` with every secret in it replaced (a library's error may quote its URL)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Reconnecting(ABC):
    """One source's consumer, run by the ingest role's service (api/sources/worker.py)."""

    # The errors that mean the source (not Herald) failed: reconnect after them.
    failures: ClassVar[tuple[type[BaseException], ...]]

    def __init__(self, name: str, secrets: list[str]) -> None:
        self.name = name
        self._secrets = secrets
        self._delay_s = RECONNECT_FIRST_S

    @abstractmethod
    async def connect_and_consume(self) -> None:
        """Connect, call `connected()`, and consume until an error of `failures`."""

    @abstractmethod
    async def reachable(self) -> bool:
        """/readyz: whether the source answers now (a check with a timeout runs it)."""

    def connected(self) -> None:
        """Called by `connect_and_consume` once connected: the next failure waits little."""
        if self._delay_s > RECONNECT_FIRST_S:
            log.info("source %s: connected", self.name)
        self._delay_s = RECONNECT_FIRST_S

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after every failure of the source."""
        while True:
            try:
                await self.connect_and_consume()
            except self.failures as exc:
                message = redacted(_described(exc), self._secrets)
                log.warning(
                    "source %s failed (%s); connecting again in %.0f s",
                    self.name,
                    message,
                    self._delay_s,
                )
            await asyncio.sleep(self._delay_s)
            self._delay_s = min(self._delay_s * 2, RECONNECT_MAX_S)


def _described(exc: BaseException) -> str:
    """The error's class and message, once (aiokafka's messages start with the class)."""
    text, kind = str(exc), type(exc).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"
