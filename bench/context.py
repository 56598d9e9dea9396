"""What every scenario works with: the stack, the loader subprocess, the receiver's tallies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.cluster import Cluster, DestinationSpec
from bench.progress import progress
from bench.stack import API_KEY, PYTHON, ROOT, Stack

WARM_TYPE = "warm.go"
WARM_GROUP = "warm"


class BenchError(Exception):
    """A scenario could not produce its figures (a process failed, a wait timed out)."""


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    case: str
    value: float | None
    unit: str
    ceiling: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / ceiling, when there is a ceiling."""
        if self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling


@dataclass
class Outcome:
    """What a scenario measured: table rows, every figure, the settings it ran with."""

    name: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """The running stack plus the clients scenarios need."""

    stack: Stack
    cluster: Cluster
    http: aiohttp.ClientSession
    quick: bool
    profile: bool = False  # `--profile`: a scenario may profile processes of its own too
    _warm_ready: bool = False
    _warm_sequence: int = 0

    def size(self, quick: int, full: int) -> int:
        """A count for this mode."""
        return quick if self.quick else full

    def seconds(self, quick: float, full: float) -> float:
        """A duration for this mode."""
        return quick if self.quick else full

    # -- the loader ----------------------------------------------------------------------

    def api_load_args(self, path: str) -> list[str]:
        """Loader arguments that POST to the API with the bench key."""
        return ["http", "--url", f"{self.stack.api_url}{path}", "--header", _auth_header()]

    def rate_load_args(
        self, rate_events_per_s: float, duration_s: float, type_pattern: str
    ) -> list[str]:
        """Loader arguments for single-event publishes at a fixed rate (open loop, 64 in
        flight at most) for `duration_s`."""
        return [
            *self.api_load_args("/v2/events"),
            "--shape",
            "event",
            "--rate",
            str(rate_events_per_s),
            "--count",
            str(int(rate_events_per_s * duration_s)),
            "--concurrency",
            "64",
            "--duration-s",
            str(duration_s),
            "--type-pattern",
            type_pattern,
        ]

    async def load(
        self, args: list[str], label: str, total: int, timeout_s: float, module: str = "bench.load"
    ) -> Any:
        """Run `python -m bench.load ARGS` (or another `module` that prints the same lines)
        in its own process; its result line, parsed."""
        log = self.stack.logs / "load.log"
        with log.open("ab") as errors:
            process = await asyncio.create_subprocess_exec(
                str(PYTHON),
                "-m",
                module,
                *args,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        result: Any = None
        try:
            assert process.stdout is not None
            async with asyncio.timeout(timeout_s):
                with progress(label, total) as bar:
                    async for raw in process.stdout:
                        line = orjson.loads(raw)
                        if "progress" in line:
                            bar.update_to(int(line["progress"]))
                        elif "result" in line:
                            result = line["result"]
                            bar.update_to(int(result.get("events_ok", 0)))
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0 or result is None:
            raise BenchError(f"loader failed ({process.returncode}); see {log}")
        return result

    # -- the receiver --------------------------------------------------------------------

    async def tally(
        self, group: str, *, percentiles: bool = False, arrivals: bool = False
    ) -> dict[str, Any]:
        """The receiver's tally of one group."""
        query = {"group": group, "percentiles": str(int(percentiles))}
        if arrivals:
            query["arrivals"] = "1"
        async with self.http.get(f"{self.stack.receiver_url}/stats", params=query) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json(loads=orjson.loads)
        return dict(body[group])

    async def reset(self, *groups: str) -> None:
        """Forget the receiver's tallies of `groups`."""
        for group in groups:
            async with self.http.post(
                f"{self.stack.receiver_url}/reset", params={"group": group}
            ) as response:
                response.raise_for_status()

    async def wait_received(
        self, group: str, expected: int, timeout_s: float, label: str
    ) -> dict[str, Any]:
        """Poll the group's distinct webhook-ids until `expected` arrived or the deadline."""
        deadline = time.monotonic() + timeout_s
        with progress(label, expected) as bar:
            while True:
                tally = await self.tally(group)
                bar.update_to(tally["unique"])
                if tally["unique"] >= expected or time.monotonic() >= deadline:
                    return tally
                await asyncio.sleep(0.2)

    async def worker_metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples now, by `name{labels}` (see metric_samples)."""
        url = f"http://127.0.0.1:{self.stack.ports.worker}/metrics"
        async with self.http.get(url) as response:
            response.raise_for_status()
            return metric_samples(await response.text())

    # -- destinations --------------------------------------------------------------------

    async def create_destinations(
        self, specs: list[DestinationSpec], label: str = "destinations"
    ) -> list[str]:
        """Create destinations through destination-changes and wait until they are folded
        and the worker routes with them (a warm-up event published after them arrived)."""
        with progress(f"{label}: write", len(specs)) as bar:
            created = await self.cluster.create_destinations(specs, bar.update_to)
        with progress(f"{label}: fold", self.cluster.folded_expected) as bar:
            await self.cluster.wait_folded(
                timeout_s=max(60.0, len(specs) / 200), on_progress=bar.update_to
            )
        await self.sync_worker()
        return created

    async def delete_destinations(self, destination_ids: list[str]) -> None:
        """Delete destinations and wait until the worker's view has the deletions."""
        await self.cluster.delete_destinations(destination_ids)
        await self.cluster.wait_folded(timeout_s=60)
        await self.sync_worker()

    async def sync_worker(self) -> None:
        """Publish one warm-up event and wait for its delivery.

        The API stamps the event with the `destinations` end offsets and the router waits
        for its view to reach them, so once it is delivered the worker routes with every
        destination folded before it.
        """
        if not self._warm_ready:
            self._warm_ready = True
            await self.cluster.create_destinations(
                [DestinationSpec("ok", WARM_GROUP, 0, (WARM_TYPE,))]
            )
            await self.cluster.wait_folded(timeout_s=60)
        self._warm_sequence += 1
        await self.publish([{"type": WARM_TYPE, "data": {"n": self._warm_sequence}}])
        tally = await self._poll_warm(self._warm_sequence, timeout_s=120)
        if tally["unique"] < self._warm_sequence:
            raise BenchError("the warm-up event was not delivered within 120 s")

    async def _poll_warm(self, expected: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            tally = await self.tally(WARM_GROUP)
            if tally["unique"] >= expected or time.monotonic() >= deadline:
                return tally
            await asyncio.sleep(0.1)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """POST a few events through the API (setup, not load)."""
        async with self.http.post(
            f"{self.stack.api_url}/v2/events/batch",
            data=orjson.dumps({"events": events}),
            headers={"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        ) as response:
            if response.status != 202:
                raise BenchError(f"publish answered {response.status}: {await response.text()}")

    async def settle(self, timeout_s: float = 120) -> dict[str, int]:
        """Wait until the worker has finished everything queued (consumer lag 0)."""
        with contextlib.suppress(Exception):
            return await self.cluster.wait_idle(timeout_s)
        return {}


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text exposition → {`name{labels as exposed}`: value}; comments skipped."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def metric_delta(
    before: dict[str, float], after: dict[str, float], name: str, **labels: str
) -> float:
    """How much the samples of `name` whose labels include `labels` grew (summed)."""
    total = 0.0
    for key, value in after.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        found = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if "=" in pair)
        if all(found.get(k, "").strip('"') == v for k, v in labels.items()):
            total += value - before.get(key, 0.0)
    return total


def _auth_header() -> str:
    return f"Authorization: Bearer {API_KEY}"
