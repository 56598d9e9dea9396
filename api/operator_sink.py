"""The operator sink in the API: checked and registered at start-up, and the API's emitter
of `destination.created/updated/deleted` (pipeline/operator_events.py says what the events
are and how they travel).

`HERALD_OPERATOR_SINK` is the body of a create (POST /v2/event-destinations), checked by
the same `validation.create_destination`, so a bad one stops the API at start-up with the
field named (`operator_sink.webhook.url: …`). The destination is the operator tenant's
`OPERATOR_SINK_ID`, created, or updated to the configured body, through `Destinations`
like any other (its credentials sealed in the record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from api import validation
from api.app_keys import DESTINATIONS, PRODUCER, SETTINGS
from api.auth import MANAGE, Principal
from api.body import read_json
from api.destinations import Destinations
from api.errors import ApiError, RequestValidationError
from api.responses import principal_of
from pipeline.operator_events import (
    OPERATOR_SINK_ID,
    OPERATOR_TENANT,
    UPDATED,
    Emitter,
    Send,
    emitter_for,
)
from pipeline.settings import Settings
from pipeline.topics import EVENTS

log = logging.getLogger(__name__)

EMITTER = web.AppKey("operator_events", Emitter)
OWNER = Principal(OPERATOR_TENANT, MANAGE)
PREFIX = "operator_sink"
# Registration waits for the destination view's fold like any create; if the worker's fold
# does not answer (it is starting), the API serves anyway and tries again in the background.
REGISTER_RETRY_S = 5.0


class OperatorSinkInvalid(ValueError):
    """HERALD_OPERATOR_SINK is not a destination the API would create; says which field."""


def sink_fields(settings: Settings) -> dict[str, Any] | None:
    """The configured operator sink, validated like a create; None if there is none."""
    if settings.operator_sink is None:
        return None
    try:
        body = orjson.loads(settings.operator_sink.get_secret_value())
    except orjson.JSONDecodeError:
        raise OperatorSinkInvalid(f"{PREFIX}: is not valid JSON.") from None
    try:
        fields = validation.create_destination(body, settings)
    except RequestValidationError as exc:
        problems = (f"{PREFIX}.{name}: {' '.join(found)}" for name, found in exc.errors.items())
        raise OperatorSinkInvalid("; ".join(problems)) from None
    if fields["id"] is not None:
        raise OperatorSinkInvalid(f"{PREFIX}.id: is chosen by Herald; leave it out.")
    if fields["type"] == "webhook" and not fields["credentials"].get("secret"):
        raise OperatorSinkInvalid(
            f"{PREFIX}.webhook.secret: is required (a whsec_ secret), to verify what arrives."
        )
    return {**fields, "id": OPERATOR_SINK_ID}


async def register(destinations: Destinations, fields: dict[str, Any]) -> None:
    """Create the operator sink, or bring it to the configured body (every start: a
    change to HERALD_OPERATOR_SINK applies with the next one)."""
    try:
        await destinations.create(OWNER, dict(fields))
        log.info("operator sink registered")
        return
    except ApiError as exc:
        if exc.status != 409:  # 409: it exists (an earlier start, or another API process)
            raise
    changes = {name: fields[name] for name in (*validation.COMMON_CHECKS, "type", "config")}
    await destinations.update(
        OWNER, OPERATOR_SINK_ID, {**changes, "credentials": fields["credentials"]}
    )
    log.info("operator sink updated to the configured destination")


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Check the operator sink (a bad one stops start-up), register it, and own the API's
    emitter for the app's life."""
    settings = app[SETTINGS]
    fields = sink_fields(settings)
    emitter = emitter_for(settings, _sender(app))
    retrying: asyncio.Task[None] | None = None
    if fields is not None and emitter is not None:
        app[EMITTER] = emitter
        try:
            await register(app[DESTINATIONS], fields)
        except ApiError as exc:
            log.warning("the operator sink is not registered yet (%s); retrying", exc.code)
            retrying = asyncio.create_task(_register_until_done(app[DESTINATIONS], fields))
    try:
        yield
    finally:
        if retrying is not None:
            retrying.cancel()
        if emitter is not None:
            await emitter.aclose()


async def _register_until_done(destinations: Destinations, fields: dict[str, Any]) -> None:
    while True:
        await asyncio.sleep(REGISTER_RETRY_S)
        try:
            await register(destinations, fields)
            return
        except ApiError as exc:
            log.warning("the operator sink is not registered yet (%s); retrying", exc.code)


def _sender(app: web.Application) -> Send:
    """Writes to `events` with the API's producer (acks=all), for the emitter's task."""

    async def send(key: str, value: bytes) -> None:
        await app[PRODUCER].send_and_wait(EVENTS, value, key=key.encode())

    return send


async def changed(
    request: web.Request, event_type: str, record: dict[str, Any] | None = None
) -> None:
    """Emit `event_type` about the destination a route just changed (`record`, or for a
    delete the one in the path); an update names the fields its body gave."""
    emitter = request.app.get(EMITTER)
    if emitter is None:
        return
    if record is None:
        record = {
            "tenant": principal_of(request).tenant,
            "id": request.match_info["destination_id"],
        }
    extra = {"changed_fields": sorted(await read_json(request))} if event_type == UPDATED else {}
    emitter.emit(event_type, record, **extra)
