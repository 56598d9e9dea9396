"""A progress bar for long runs: tqdm on a terminal when installed, plain text lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

TEXT_INTERVAL_S = 0.5
# Not a terminal (make in CI, a log file): a line every few seconds instead of redraws.
LOG_INTERVAL_S = 5.0


class Bar(Protocol):
    """What the scenarios call: set the count done, close at the end."""

    def update_to(self, done: int) -> None:
        """Show `done` of the total."""

    def close(self) -> None:
        """Finish the bar's line."""


class TextBar:
    """`label [#####.....] 512/1,024  3.1s` on stderr, redrawn at most twice a second."""

    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = max(total, 1)
        self._done = 0
        self._started = time.monotonic()
        self._shown_at = 0.0
        self._tty = sys.stderr.isatty()

    def update_to(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._shown_at >= (TEXT_INTERVAL_S if self._tty else LOG_INTERVAL_S):
            self._shown_at = now
            self._draw(end="" if self._tty else "\n")

    def _draw(self, end: str) -> None:
        width = 30
        filled = min(width, width * self._done // self._total)
        elapsed_s = time.monotonic() - self._started
        line = (
            f"  {self._label:<28} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self._done:,}/{self._total:,}  {elapsed_s:5.1f}s"
        )
        sys.stderr.write(("\r" if self._tty else "") + line + end)
        sys.stderr.flush()

    def close(self) -> None:
        self._draw(end="\n")


class TqdmBar:
    """The same interface over tqdm."""

    def __init__(self, label: str, total: int, tqdm: Any) -> None:
        self._bar = tqdm(total=total, desc=f"  {label}", unit="ev", leave=True, file=sys.stderr)

    def update_to(self, done: int) -> None:
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


@contextlib.contextmanager
def progress(label: str, total: int) -> Iterator[Bar]:
    """`with progress("fan-out 10", total) as bar: bar.update_to(n)`."""
    bar: Bar
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    # tqdm's redraws make a log file unreadable: in a pipe, the text bar's plain lines.
    bar = TqdmBar(label, total, tqdm) if tqdm and sys.stderr.isatty() else TextBar(label, total)
    try:
        yield bar
    finally:
        bar.close()
