"""Make docs/trace.png: one event's trace, as Zipkin's own UI (Lens) shows it.

    .venv/bin/python -m scripts.trace_screenshot [--port-offset 300] [--out docs/trace.png]

Starts a Zipkin server (its exec jar from Maven Central, fetched with `mvn` if it is not in
~/.m2 yet; in-memory storage, bound to 127.0.0.1 on 9411 + the offset) and the bench's
stack (bench/stack.py: Kafka, PostgreSQL, worker, API and receiver on the usual ports plus
the offset), restarts the API and the worker with tracing on (OTEL_TRACES_EXPORTER=zipkin,
every event sampled), and creates a webhook destination on the bench receiver's `flaky`
path (503 to the first attempt, 200 to the retry; the bench's retry delay is 0.5 s). A
"shop" publisher span of this script's own (exported to the same Zipkin) publishes one
event with its `traceparent`, so the trace has a root. Once Zipkin finds the trace by the
event's `herald.event_id` with both attempts recorded (or the deadline passes), Playwright
drives Debian's chromium (headless) to the trace's page, expands every span, selects the
failed first attempt (its tags in the side panel) and saves the PNG. Everything it
started is stopped on the way out, whatever happened.

Not part of `make test`: it needs Java, Maven and a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from playwright.async_api import ViewportSize, async_playwright

from bench.stack import API_KEY, DEFAULT_PORT_OFFSET, ROOT, Stack, ready, terminate

ZIPKIN_ARTIFACT = "io.zipkin:zipkin-server:3.4.4:jar:exec"
ZIPKIN_JAR = (
    Path.home() / ".m2/repository/io/zipkin/zipkin-server/3.4.4/zipkin-server-3.4.4-exec.jar"
)
ZIPKIN_PORT = 9411
CHROMIUM = "/usr/bin/chromium"
EVENT_TYPE = "order.paid"
VIEWPORT = ViewportSize(width=1300, height=860)
READY_TIMEOUT_S = 180.0
TRACE_TIMEOUT_S = 90.0


def tool(name: str) -> str:
    """The path of a command this script needs (java, mvn: scripts/setup.sh installs them)."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"no {name}: scripts/setup.sh installs java and maven")
    return path


def zipkin_jar() -> Path:
    """The Zipkin server's exec jar, fetched into ~/.m2 by Maven if it is not there."""
    if not ZIPKIN_JAR.exists():
        subprocess.run(
            [
                tool("mvn"),
                "-q",
                "dependency:get",
                f"-Dartifact={ZIPKIN_ARTIFACT}",
                "-Dtransitive=false",
            ],
            check=True,
            timeout=600,
        )
    return ZIPKIN_JAR


def start_zipkin(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Zipkin on 127.0.0.1:`port`, ready (its /health answers 200)."""
    command = [
        tool("java"),
        "-Xmx256m",
        "-jar",
        str(zipkin_jar()),
        f"--armeria.ports[0].port={port}",
        "--armeria.ports[0].ip=127.0.0.1",
        "--armeria.ports[0].protocols=http",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready(port, "/health"):
        if process.poll() is not None or time.monotonic() > deadline:
            terminate(process)
            raise RuntimeError(f"Zipkin did not start on 127.0.0.1:{port}; see {log}")
        time.sleep(0.5)
    return process


def traced_env(zipkin_url: str) -> dict[str, str]:
    """The API's and the worker's tracing settings: every event, straight to Zipkin."""
    return {
        "OTEL_TRACES_EXPORTER": "zipkin",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": f"{zipkin_url}/api/v2/spans",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # the SDK's own: export every 0.2 s, not 5 s
    }


async def publish_traced(stack: Stack, zipkin_url: str) -> tuple[str, str]:
    """Create the flaky webhook destination and publish one event from inside a publisher's
    span (exported to Zipkin too); returns the event id and the trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(
        SimpleSpanProcessor(ZipkinExporter(endpoint=f"{zipkin_url}/api/v2/spans"))
    )
    tracer = provider.get_tracer("trace_screenshot")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(stack.api_url, headers=auth) as session:
        destination = {
            "name": "orders",
            "webhook": {"url": f"{stack.receiver_url}/flaky/trace/1"},
            "events": ["order.*"],
        }
        async with session.post("/v2/event-destinations", json=destination) as response:
            if response.status != 201:
                raise RuntimeError(f"destination: {response.status} {await response.text()}")
        with tracer.start_as_current_span("pay order", kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)
            event = {"type": EVENT_TYPE, "data": {"order": f"ord_{secrets.token_hex(4)}"}}
            async with session.post("/v2/events", json=event, headers=headers) as response:
                body = await response.json()
                if response.status != 202:
                    raise RuntimeError(f"publish: {response.status} {body}")
            trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return str(body["id"]), trace_id


async def wait_for_trace(zipkin_url: str, event_id: str) -> list[dict[str, Any]]:
    """The event's trace as Zipkin finds it by `herald.event_id`, once both attempts'
    records are in it."""
    query = {"annotationQuery": f"herald.event_id={event_id}", "limit": "1"}
    deadline = time.monotonic() + TRACE_TIMEOUT_S
    async with aiohttp.ClientSession(zipkin_url) as session:
        while True:
            async with session.get("/api/v2/traces", params=query) as response:
                traces: list[list[dict[str, Any]]] = await response.json()
            spans = traces[0] if traces else []
            if sum(s.get("name") == "herald.record" for s in spans) >= 2:
                return spans
            if time.monotonic() > deadline:
                names = sorted(str(s.get("name")) for s in spans)
                raise RuntimeError(f"no complete trace for {event_id} in Zipkin: {names}")
            await asyncio.sleep(0.5)  # polling Zipkin's query API, with the deadline above


async def screenshot(zipkin_url: str, trace_id: str, out: Path) -> None:
    """The trace's page in Zipkin's UI: every span expanded, the first attempt selected
    with its tags showing."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            await page.goto(f"{zipkin_url}/zipkin/traces/{trace_id}")
            await page.get_by_title("Expand all").click()
            attempt = page.get_by_text(re.compile(r"herald-worker: herald\.attempt")).first
            await attempt.click()
            # Fold the attempt's annotations (client start/finish) so that its tags show.
            annotations = page.get_by_text("Annotation", exact=True)
            await annotations.locator("xpath=following-sibling::button").click()
            await page.get_by_text("Client Start").wait_for(state="hidden")
            await page.get_by_text("otel.status_code").wait_for()
            await page.get_by_role("tooltip").wait_for(state="hidden")  # "Expand all"'s
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "trace.png")
    args = parser.parse_args()
    stack = Stack(args.port_offset)
    zipkin_port = ZIPKIN_PORT + args.port_offset
    zipkin_url = f"http://127.0.0.1:{zipkin_port}"
    zipkin = start_zipkin(zipkin_port, stack.logs / "zipkin.log")
    try:
        stack.start()
        stack.restart_herald(traced_env(zipkin_url))
        event_id, trace_id = asyncio.run(publish_traced(stack, zipkin_url))
        spans = asyncio.run(wait_for_trace(zipkin_url, event_id))
        print(f"event {event_id}: trace {trace_id}, {len(spans)} spans in Zipkin")
        asyncio.run(screenshot(zipkin_url, trace_id, args.out))
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    finally:
        stack.stop()
        terminate(zipkin)


if __name__ == "__main__":
    main()
