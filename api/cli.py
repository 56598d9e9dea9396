"""The `herald` command: api, worker, topics apply, keygen."""

from __future__ import annotations

import argparse
import sys

from pipeline.logs import configure as configure_logging
from pipeline.settings import Settings


def _api(settings: Settings) -> int:
    import asyncio

    import uvloop
    from aiohttp import web

    from api.app import create_app

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        access_log=None,
        print=lambda *_: None,
    )
    return 0


def _worker(settings: Settings) -> int:
    import asyncio

    import uvloop

    from pipeline.app import run_worker

    # Before the Faust app exists: mode's Worker takes the loop the policy makes. uvloop cut
    # the worker's CPU per delivery by about a tenth in the benchmarks (README, Performance).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run_worker(settings)
    return 0


def _topics_apply(settings: Settings) -> int:
    from pipeline.topics import apply, load_specs

    report = apply(settings.kafka_bootstrap, load_specs(settings.topics_file))
    for name in report.created:
        print(f"created      {name}")
    for name in report.reconfigured:
        print(f"reconfigured {name}")
    print(f"unchanged    {len(report.unchanged)} topics")
    for problem in report.drift:
        print(f"DRIFT        {problem}", file=sys.stderr)
    return 1 if report.drift else 0


def _keygen(_: Settings) -> int:
    from pipeline.crypto import generate_key

    print(generate_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: `herald api|worker|topics apply|keygen`."""
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API")
    commands.add_parser("worker", help="run a pipeline worker (agents and sinks)")
    topics = commands.add_parser("topics", help="manage Kafka topics")
    topics.add_argument("action", choices=["apply"])
    commands.add_parser("keygen", help="print a new encryption key for HERALD_ENCRYPTION_KEYS")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `herald` console script."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    # JSON lines for every command; the worker hands the same config to Faust.
    configure_logging(settings.log_level, service=args.command)
    handler = {"api": _api, "worker": _worker, "topics": _topics_apply, "keygen": _keygen}
    return handler[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
