"""What a worker process runs: `herald worker --role router,deliver,index` (default `all`).

- router: the Faust app (fold and router agents, their tables), the sampler of the gauges
  that describe shared state (consumer lag, DLQ records, destinations), HTTP.
- deliver: the delivery runner (its own consumer group on `deliveries` and the retry
  tiers), the destination view, the attempt producer, the publisher cache, HTTP. No Faust.
- index: the indexer and its PostgreSQL pool and migrations, HTTP. No Faust, no view.

Each role's consumers are in a group of their own, so processes of one role share its
partitions and roles scale apart: one router and index process beside a delivering
process per core (scripts/run.sh), or `docker compose up --scale deliver=4`.
"""

from __future__ import annotations

ROUTER = "router"
DELIVER = "deliver"
INDEX = "index"
ROLES = (ROUTER, DELIVER, INDEX)
ALL = "all"

Roles = frozenset[str]


def parse_roles(text: str) -> Roles:
    """`all` or a comma list of role names → the set of roles (argparse's `type=`)."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {ALL}:
        return frozenset(ROLES)
    unknown = names - set(ROLES)
    if unknown or not names:
        raise ValueError(f"roles are {ALL!r} or a comma list of {', '.join(ROLES)}: {text!r}")
    return frozenset(names)


def describe(roles: Roles) -> str:
    """The roles as the command line spells them, in a fixed order (for logs and names)."""
    return ALL if roles == frozenset(ROLES) else ",".join(r for r in ROLES if r in roles)
