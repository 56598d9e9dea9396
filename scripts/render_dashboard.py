"""Render the Grafana dashboard's panels to a PNG from a live run, with matplotlib.

Grafana is not in the package registries this project can reach, so this draws the panels
of ops/grafana/dashboards/herald.json itself: the same titles, PromQL, legends and layout,
queried from a real Prometheus (Debian's `prometheus` package) that scraped a real stack.

    # a whole run against a running stack (`make run`, or the integration fixtures): start
    # Prometheus on 127.0.0.1, send a mixed load for a few minutes, render, stop Prometheus.
    # docs/dashboard.png is from `make run` with a short retry schedule and a Kafka source:
    #   HERALD_RETRY_BASE_DELAY_S=0.2 HERALD_MAX_RETRIES=3 HERALD_SOURCES='[{"type": "kafka",
    #   "name": "platform", "bootstrap_servers": "127.0.0.1:9092", "topic": "platform-events",
    #   "default_tenant": "dev"}]' make run
    # (a router on 8081, two deliver processes on 8082-8083, the ingest process on 8084), then
    .venv/bin/python scripts/render_dashboard.py run --api http://127.0.0.1:8080 \\
        --worker http://127.0.0.1:8081 --worker http://127.0.0.1:8082 \\
        --worker http://127.0.0.1:8083 --worker http://127.0.0.1:8084 --key sk_test_dev \\
        --kafka 127.0.0.1:9092 --amqp amqp://guest:guest@127.0.0.1:5672/ \\
        --source-topic platform-events --minutes 5 --out docs/dashboard.png

    # or only draw, from any Prometheus that scrapes Herald:
    .venv/bin/python scripts/render_dashboard.py render --prometheus http://127.0.0.1:9090 \\
        --minutes 30 --out docs/dashboard.png

Retries, dead letters and auto-disables show within minutes only on a stack with a short
retry schedule (the integration stack's: HERALD_RETRY_BASE_DELAY_S=0.2, HERALD_MAX_RETRIES=3).
Needs matplotlib, which Herald itself does not depend on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "herald.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL_S = 2
STEP_S = 5
# What Grafana would make of $__rate_interval at this scrape interval and step.
RATE_INTERVAL = "20s"
DEMO_NAME = "herald-dashboard-demo"

# -- the load ----------------------------------------------------------------------------


@dataclass
class Behaviour:
    """How a receiver answers: `status`, after a random delay; `flaky` of them fail (503)."""

    status: int = 200
    delay_s: tuple[float, float] = (0.0, 0.0)
    flaky: float = 0.0


async def start_receiver(behaviour: Behaviour) -> tuple[web.AppRunner, str]:
    """An HTTP receiver on 127.0.0.1 that answers as `behaviour` says; (runner, url)."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(random.uniform(*behaviour.delay_s))  # noqa: S311 - a simulated receiver
        if behaviour.flaky and random.random() < behaviour.flaky:  # noqa: S311
            return web.Response(status=503, text="busy")
        return web.Response(status=behaviour.status, text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


class Load:
    """Calls the API as one key: destinations, events, batches and a few bad requests."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._sequence = 0

    async def destination(
        self, destination_type: str, config: dict[str, Any], events: str, **fields: Any
    ) -> None:
        """Create a destination of `destination_type` subscribed to `events` (with more
        `fields` of the create request, such as `ordering`)."""
        body = {"name": "demo", "type": destination_type, destination_type: config, **fields}
        async with self._session.post(
            "/v2/event-destinations", json={**body, "events": [events]}
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"create {destination_type}: {await response.text()}")

    async def publish(self, event_type: str) -> None:
        """Publish one event (a 503 while the broker is busy is fine for a demo)."""
        self._sequence += 1
        body: dict[str, Any] = {"type": event_type, "data": {"n": self._sequence}}
        if event_type in ORDERED_TYPES:  # one of a few accounts, delivered in order per account
            body["ordering_key"] = f"account-{self._sequence % 5}"
        async with self._session.post("/v2/events", json=body) as response:
            await response.read()

    async def noise(self) -> None:
        """A batch with one invalid item, a read of a missing destination, a bad key."""
        items = [{"type": "order.created", "data": {}} for _ in range(9)] + [{"type": ""}]
        async with self._session.post("/v2/events/batch", json={"events": items}) as response:
            await response.read()
        async with self._session.get("/v2/event-destinations/evtd_missing") as response:
            await response.read()
        headers = {"Authorization": "Bearer not-a-key"}
        async with self._session.get("/v2/event-destinations", headers=headers) as response:
            await response.read()


# Published with an ordering key (see Load.publish).
ORDERED_TYPES = frozenset({"invoice.paid"})


def rates(progress: float) -> dict[str, float]:
    """Events per second by type at `progress` (0..1) of the run: steady, then a burst."""
    burst = 4.0 if 0.4 <= progress < 0.55 else 1.0
    return {
        "order.created": 15.0 * burst,
        "invoice.paid": 4.0,
        "job.failed": 0.5,
        "user.deleted": 1.0 if progress >= 0.5 else 0.0,
    }


async def _webhooks(load: Load, receivers: dict[str, str]) -> None:
    for name, events in (
        ("ok", "order.created"),
        ("slow", "order.created"),
        ("ok", "invoice.paid"),
        ("broken", "job.failed"),
    ):
        await load.destination("webhook", {"url": f"{receivers[name]}/{name}"}, events)
    # Ordered per key: a failed attempt holds back its account's later invoices.
    flaky = {"url": f"{receivers['flaky']}/flaky"}
    await load.destination("webhook", flaky, "invoice.paid", ordering="per_key")


async def _other_types(load: Load, kafka: str | None, amqp: str | None) -> None:
    """A kafka and a rabbitmq destination too, so latency by type has more than one type."""
    if kafka:
        await _create_topic(kafka, DEMO_NAME)
        config = {"bootstrap_servers": kafka, "topic": DEMO_NAME}
        await load.destination("kafka", config, "order.created")
    if amqp:
        import aio_pika

        connection = await aio_pika.connect(amqp)
        channel = await connection.channel()
        await channel.declare_exchange(DEMO_NAME, aio_pika.ExchangeType.TOPIC)
        await connection.close()
        config = {"server_url": amqp, "exchange": DEMO_NAME}
        await load.destination("rabbitmq", config, "order.created")


async def _tick(load: Load, second: int, progress: float, receivers: dict[str, str]) -> None:
    """One second of load."""
    if second % 45 == 44:  # broken destinations get disabled: keep one coming
        await load.destination("webhook", {"url": f"{receivers['broken']}/b"}, "job.failed")
    if second == 0 or (progress >= 0.5 and second % 30 == 0):
        await load.destination("webhook", {"url": f"{receivers['gone']}/g"}, "user.deleted")
    calls = [load.noise()]
    for event_type, per_second in rates(progress).items():
        whole = int(per_second)
        extra = 1 if random.random() < per_second - whole else 0  # noqa: S311
        calls += [load.publish(event_type) for _ in range(whole + extra)]
    await asyncio.gather(*calls)


async def drive(
    api: str,
    key: str,
    minutes: float,
    kafka: str | None = None,
    amqp: str | None = None,
    source_topic: str | None = None,
) -> None:
    """Send the load for `minutes`: steady traffic, a burst, failures and auto-disables;
    with `source_topic` (on `kafka`), a few events a second through a Kafka source too."""
    behaviours = {
        "ok": Behaviour(delay_s=(0.002, 0.03)),
        "slow": Behaviour(delay_s=(0.2, 0.9)),
        "flaky": Behaviour(delay_s=(0.01, 0.05), flaky=0.3),
        "broken": Behaviour(status=500),
        "gone": Behaviour(status=410),
    }
    started = {name: await start_receiver(b) for name, b in behaviours.items()}
    receivers = {name: url for name, (_, url) in started.items()}
    headers = {"Authorization": f"Bearer {key}"}
    source = await _source_producer(kafka, source_topic)
    try:
        async with aiohttp.ClientSession(base_url=api, headers=headers) as session:
            load = Load(session)
            await _webhooks(load, receivers)
            await _other_types(load, kafka, amqp)
            seconds = int(minutes * 60)
            for second in range(seconds):
                began = time.monotonic()
                await _tick(load, second, second / seconds, receivers)
                if source is not None:
                    await _source_tick(source, str(source_topic), second)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))  # pacing
    finally:
        for runner, _ in started.values():
            await runner.cleanup()
        if source is not None:
            await source.stop()


async def _create_topic(kafka: str, name: str) -> None:
    """Topic `name` on `kafka` (the broker does not create topics on first use)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics([NewTopic(name, 1, 1)])
    await admin.close()


async def _source_producer(kafka: str | None, topic: str | None) -> AIOKafkaProducer | None:
    """A producer to the source topic, when there is one."""
    if kafka is None or topic is None:
        return None
    await _create_topic(kafka, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    return producer


async def _source_tick(producer: AIOKafkaProducer, topic: str, second: int) -> None:
    """One second of records on the source topic: a few events, now and then a bad one
    (it goes to `rejects`)."""
    for n in range(4):
        body = {"type": "order.created", "data": {"via": "source", "n": second * 4 + n}}
        await producer.send(topic, json.dumps(body).encode())
    if second % 10 == 0:
        await producer.send(topic, b'{"type": "", "data": {}}')
    await producer.flush()


# -- Prometheus --------------------------------------------------------------------------


def prometheus_config(api: str, workers: list[str]) -> dict[str, Any]:
    """Scrape the API and every worker process every SCRAPE_INTERVAL_S; evaluate Herald's
    alerts."""
    interval = f"{SCRAPE_INTERVAL_S}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": f"herald-{role}", "static_configs": [{"targets": targets}]}
            for role, targets in (
                ("api", [urlsplit(api).netloc]),
                ("worker", [urlsplit(url).netloc for url in workers]),
            )
        ],
    }


@contextlib.asynccontextmanager
async def prometheus(api: str, workers: list[str], port: int) -> AsyncIterator[str]:
    """A Prometheus on 127.0.0.1:`port` with its data in a temporary directory."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("no prometheus binary: apt-get install prometheus")
    with tempfile.TemporaryDirectory(prefix="herald-prometheus-") as directory:
        config = Path(directory) / "prometheus.yml"
        config.write_text(json.dumps(prometheus_config(api, workers)))  # JSON is YAML
        with (Path(directory) / "prometheus.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(url)
            yield url
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)  # polling a process we just started, with a deadline
    raise RuntimeError(f"Prometheus at {url} not ready after {timeout_s}s")


# -- drawing -----------------------------------------------------------------------------

Series = tuple[str, list[datetime], list[float]]


async def query_range(
    session: aiohttp.ClientSession, url: str, expr: str, start: float, end: float
) -> list[tuple[dict[str, str], list[datetime], list[float]]]:
    """Every series of `expr` between `start` and `end` (epoch seconds), STEP_S apart."""
    params = {"query": expr, "start": str(start), "end": str(end), "step": str(STEP_S)}
    async with session.get(f"{url}/api/v1/query_range", params=params) as response:
        body = await response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    found = []
    for result in body["data"]["result"]:
        xs = [datetime.fromtimestamp(float(t), UTC) for t, _ in result["values"]]
        ys = [float(v) for _, v in result["values"]]
        found.append((result["metric"], xs, ys))
    return found


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{name}} → the label's value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template).strip()


async def panel_series(
    session: aiohttp.ClientSession, url: str, panel: dict[str, Any], start: float, end: float
) -> list[Series]:
    """The series of every target of a panel, legends applied; NaN points dropped."""
    series: list[Series] = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
        for labels, xs, ys in await query_range(session, url, expr, start, end):
            points = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y]  # y != NaN
            if points:
                name = legend(target.get("legendFormat") or "", labels) or expr
                series.append((name, [p[0] for p in points], [p[1] for p in points]))
    return series


def _unit_formatter(unit: str) -> Callable[[float, int], str]:
    def seconds(value: float, _: int) -> str:
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.3g} s"

    formats: dict[str, Callable[[float, int], str]] = {
        "percentunit": lambda value, _: f"{value * 100:.0f}%",
        "s": seconds,
        "reqps": lambda value, _: f"{value:.3g}/s",
    }
    return formats.get(unit, lambda value, _: f"{value:.4g}")


def draw_panel(axes: Any, panel: dict[str, Any], series: list[Series]) -> None:
    """One timeseries panel: title, lines (stacked if the panel stacks), unit, legend."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    axes.set_title(panel["title"], loc="left", fontsize=11, color="#d8d9da")
    defaults = panel["fieldConfig"]["defaults"]
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    if stacked and series:
        times = sorted({x for _, xs, _ in series for x in xs})
        lookups = [dict(zip(xs, ys, strict=True)) for _, xs, ys in series]
        values = [[lookup.get(t, 0.0) for t in times] for lookup in lookups]
        axes.stackplot(times, values, labels=[name for name, _, _ in series], alpha=0.6)
    for name, xs, ys in [] if stacked else series:
        axes.plot(xs, ys, label=name, linewidth=1.2)
    if not series:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="#8e8e8e")
    axes.yaxis.set_major_formatter(FuncFormatter(_unit_formatter(defaults.get("unit", ""))))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    if "min" in defaults:
        axes.set_ylim(bottom=defaults["min"])
    if "max" in defaults:
        axes.set_ylim(top=defaults["max"] * 1.02)
    axes.grid(color="#2f3136", linewidth=0.6)
    axes.tick_params(colors="#b0b3b8", labelsize=8)
    if series:
        axes.legend(fontsize=7, loc="upper left", ncol=2 if len(series) > 4 else 1, framealpha=0.4)


async def render(url: str, start: float, end: float, out: Path) -> None:
    """Draw every panel of the dashboard, laid out on Grafana's 24-column grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    figure = plt.figure(figsize=(22, rows * 0.42), facecolor="#111217")
    grid = figure.add_gridspec(rows + 1, 24, hspace=2.4, wspace=1.6, top=0.96, bottom=0.02)
    async with aiohttp.ClientSession() as session:
        for panel in panels:
            pos = panel["gridPos"]
            axes = figure.add_subplot(
                grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
            )
            axes.set_facecolor("#181b1f")
            if panel["type"] == "row":
                axes.axis("off")
                axes.text(0, 0.2, panel["title"], fontsize=14, weight="bold", color="#ffffff")
                continue
            draw_panel(axes, panel, await panel_series(session, url, panel, start, end))
        footer = await _alert_summary(session, url)
    when = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    figure.suptitle(
        f"{dashboard['title']} — live run, {when}", x=0.01, ha="left", fontsize=16, color="white"
    )
    figure.text(0.01, 0.005, footer, fontsize=9, color="#b0b3b8")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=figure.get_facecolor())


async def _alert_summary(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    if not alerts:
        return "Alerts (ops/prometheus/alerts.yml): none pending or firing at the end of the run."
    states = sorted(
        {
            f"{a['labels']['alertname']} ({a['state']}, {a['labels'].get('type', '')})"
            for a in alerts
        }
    )
    return "Alerts (ops/prometheus/alerts.yml) at the end of the run: " + ", ".join(states)


# -- command line ------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    """Prometheus up, the load for `minutes`, one more scrape, the PNG, Prometheus down."""
    async with prometheus(args.api, args.worker, args.prometheus_port) as url:
        start = time.time()
        await drive(args.api, args.key, args.minutes, args.kafka, args.amqp, args.source_topic)
        await asyncio.sleep(SCRAPE_INTERVAL_S * 3)  # let the last numbers be scraped
        await render(url, start - 30, time.time(), args.out)


def main() -> None:
    """`run` (Prometheus + load + render) or `render` (from a Prometheus already running)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start Prometheus, send a load, render")
    run_parser.add_argument("--api", required=True)
    # `make run` starts a router and deliver processes, each with its own /metrics.
    run_parser.add_argument(
        "--worker", required=True, action="append", help="a worker's URL (once per process)"
    )
    run_parser.add_argument("--key", required=True)
    run_parser.add_argument("--kafka", help="bootstrap: also deliver to a kafka destination")
    run_parser.add_argument("--amqp", help="URL: also deliver to a rabbitmq destination")
    run_parser.add_argument(
        "--source-topic", help="a topic on --kafka that a configured Kafka source reads"
    )
    run_parser.add_argument("--prometheus-port", type=int, default=19390)
    render_parser = commands.add_parser("render", help="render from a running Prometheus")
    render_parser.add_argument("--prometheus", required=True)
    for sub in (run_parser, render_parser):
        sub.add_argument("--minutes", type=float, default=5.0)
        sub.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    if args.command == "run":
        asyncio.run(run(args))
    else:
        end = time.time()
        asyncio.run(render(args.prometheus, end - args.minutes * 60, end, args.out))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
