"""What a worker process runs: `herald worker --role router,deliver,index` (default `all`).

- router: the Faust app (fold and router agents, their tables), the sampler of the gauges
  that describe shared state (consumer lag, DLQ records, destinations), HTTP.
- deliver: the delivery runner (its own consumer group on `deliveries` and the retry
  tiers), the destination view, the attempt producer, the publisher cache, HTTP. No Faust.
- index: the indexer and its PostgreSQL pool and migrations, HTTP. No Faust, no view.

- ingest: the configured sources (api/sources/): their consumers, the `events` producer,
  the destination and tenant views, HTTP. It runs the API's validation, so it is a process
  of its own (`--role ingest` alone) and not part of `all`; `make run`, docker compose and
  the Helm chart start one when sources are configured.

Each role's consumers are in a group of their own, so processes of one role share its
partitions and roles scale apart: one router and index process beside a delivering
process per core (scripts/run.sh), or `docker compose up --scale deliver=4`.
"""

from __future__ import annotations

ROUTER = "router"
DELIVER = "deliver"
INDEX = "index"
ROLES = (ROUTER, DELIVER, INDEX)
INGEST = "ingest"
ALL = "all"

Roles = frozenset[str]


def parse_roles(text: str) -> Roles:
    """`all` or a comma list of role names → the set of roles (argparse's `type=`)."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {ALL}:
        return frozenset(ROLES)
    if INGEST in names and names != {INGEST}:
        raise ValueError(f"the {INGEST} role runs in a process of its own: {text!r}")
    if names == {INGEST}:
        return frozenset(names)
    unknown = names - set(ROLES)
    if unknown or not names:
        raise ValueError(
            f"roles are {ALL!r}, {INGEST!r} or a comma list of {', '.join(ROLES)}: {text!r}"
        )
    return frozenset(names)


def describe(roles: Roles) -> str:
    """The roles as the command line spells them, in a fixed order (for logs and names)."""
    if roles == {INGEST}:
        return INGEST
    return ALL if roles == frozenset(ROLES) else ",".join(r for r in ROLES if r in roles)
