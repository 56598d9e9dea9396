"""The `herald` command: api, worker, topics apply, keygen, dlq."""

from __future__ import annotations

import argparse
import sys

from api import dead_letters
from pipeline.logs import configure as configure_logging
from pipeline.roles import ALL, INGEST, ROLES, Roles, parse_roles
from pipeline.settings import Settings


def _api(settings: Settings) -> int:
    import asyncio

    import uvloop
    from aiohttp import web

    from api.app import create_app
    from pipeline import tracing

    tracing.configure(settings, "api")  # before the app: it instruments aiohttp's Application
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        access_log=None,
        print=lambda *_: None,
    )
    return 0


def _worker(settings: Settings, roles: Roles) -> int:
    import asyncio

    import uvloop

    from pipeline import tracing

    tracing.configure(settings, "worker")
    # Before the Faust app exists: mode's Worker takes the loop the policy makes. uvloop cut
    # the worker's CPU per delivery by about a tenth in the benchmarks (README, Performance).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if roles == {INGEST}:
        from api.sources.worker import run_ingest

        run_ingest(settings)
        return 0
    from pipeline.worker import run_worker

    run_worker(settings, roles)
    return 0


def _topics_apply(settings: Settings) -> int:
    from pipeline.topics import apply, load_specs

    report = apply(settings.kafka_bootstrap, load_specs(settings.topics_file))
    for name in report.created:
        print(f"created      {name}")
    for name in report.raised:
        print(f"raised       {name} (more partitions)")
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


def _roles(text: str) -> Roles:
    try:
        return parse_roles(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The command line: `herald api|worker [--role R]|topics apply|keygen|dlq …`."""
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API")
    worker = commands.add_parser("worker", help="run a pipeline worker (agents and sinks)")
    worker.add_argument(
        "--role",
        dest="roles",
        type=_roles,
        default=frozenset(ROLES),
        metavar="ROLES",
        help=f"{ALL} (the default), a comma list of {', '.join(ROLES)}, or {INGEST} alone "
        "(pipeline/roles.py)",
    )
    topics = commands.add_parser("topics", help="manage Kafka topics")
    topics.add_argument("action", choices=["apply"])
    commands.add_parser("keygen", help="print a new encryption key for HERALD_ENCRYPTION_KEYS")
    dead_letters.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `herald` console script."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    # JSON lines for every command; the worker hands the same config to Faust.
    configure_logging(settings.log_level, service=args.command)
    if args.command == "worker":
        return _worker(settings, args.roles)
    if args.command == "dlq":
        return dead_letters.run(settings, args)
    handler = {"api": _api, "topics": _topics_apply, "keygen": _keygen}
    return handler[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
