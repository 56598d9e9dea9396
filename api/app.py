"""create_app(settings): the aiohttp application, its middlewares and long-lived clients."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from api import operator_sink
from api.app_keys import (
    DB,
    DESTINATIONS,
    KEYRING,
    PORTAL_TOKENS,
    PRODUCER,
    RATE_LIMITER,
    RECOVERIES,
    SEALER,
    SETTINGS,
    TENANT_VIEW,
    TENANTS,
    VIEW,
)
from api.auth import TENANT_HEADER, KeyRing, allowed_roles, authorize
from api.destinations import Destinations
from api.errors import (
    ApiError,
    RequestValidationError,
    too_many_requests,
)
from api.idempotency import idempotency
from api.portal_sessions import PortalTokens
from api.publishing import event_producer
from api.ratelimit import RateLimiter
from api.recovery import Recoveries
from api.routes import (
    deliveries,
    destinations,
    docs,
    events,
    portal,
    recoveries,
    stats,
    tenants,
)
from api.tenant_view import TenantView
from api.tenants import Tenants
from pipeline import ids, metrics
from pipeline.crypto import Sealer
from pipeline.db import create_pool, migrate
from pipeline.health import health_routes
from pipeline.settings import Settings
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "Request-Id"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
# The static pages and their files need no credential: the portal's (api/routes/portal.py)
# sends its session token to /v2 itself, Swagger UI's (api/routes/docs.py) the key pasted in.
STATIC_PATHS = ("/portal", "/docs")
# How long start-up waits for the tenant view to read `tenant-changes` to its end (a small
# topic: milliseconds, unless the broker is slow to answer).
TENANT_VIEW_START_TIMEOUT_S = 60.0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id on every response; domain errors → contract bodies; auth and rate limits
    for /v2; metrics."""
    started_s = time.perf_counter()
    request_id = ids.new_id("req_")
    request["request_id"] = request_id
    try:
        if not _public(request.path):
            _authenticate(request)
        response = await handler(request)
    except (ApiError, RequestValidationError) as exc:
        response = exc.response(request_id)
    except web.HTTPException as exc:
        code = {404: "resource_missing", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = ApiError(exc.status, code, exc.reason).response(request_id)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        response = ApiError(
            500, "internal_error", "Something went wrong on Herald's side.", error_type="api_error"
        ).response(request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    metrics.record_request(
        _route_template(request), request.method, response.status, time.perf_counter() - started_s
    )
    return response


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(
        path == static or path.startswith(static + "/") for static in STATIC_PATHS
    )


def _authenticate(request: web.Request) -> None:
    """401 without a known key or valid portal session; 404 for a Herald-Tenant naming no
    tenant; 429 when the key is over its rate limit (checked only after authentication, so
    an unknown key never fills a bucket); 403 when the route needs a role the caller lacks,
    before anything else runs (an idempotent replay included)."""
    principal = request.app[KEYRING].authenticate(
        request.headers.get("Authorization"), request.headers.get(TENANT_HEADER)
    )
    retry_after_s = request.app[RATE_LIMITER].retry_after_s(principal.key_sha256)
    if retry_after_s is not None:
        raise too_many_requests(retry_after_s)
    if request.match_info.route.resource is not None:
        authorize(principal, allowed_roles(request.match_info.handler))
    request["principal"] = principal
    _refuse_nul_parameters(request)


def _refuse_nul_parameters(request: web.Request) -> None:
    """400 for a path or query parameter holding U+0000, which no id, filter or cursor has
    (PostgreSQL refuses it in a query, which would otherwise surface as a 503)."""
    given = [*request.match_info.items(), *request.query.items()]
    errors = {
        name: ["must not contain the NUL character."] for name, value in given if "\x00" in value
    }
    if errors:
        raise RequestValidationError(errors)


def _route_template(request: web.Request) -> str:
    """The matched route's template (bounded, unlike the path); 'unmatched' for a 404/405."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else metrics.UNMATCHED_ROUTE


def create_app(settings: Settings) -> web.Application:
    """The API application: routes, middlewares, and the producer and view it owns."""
    # Room for the event's data plus its envelope; a larger body is a 413.
    app = web.Application(
        middlewares=[request_context, idempotency],
        client_max_size=max(settings.max_batch_bytes, settings.max_event_bytes + 16 * 1024),
    )
    app[SETTINGS] = settings
    app[TENANT_VIEW] = TenantView(settings.kafka_bootstrap)
    app[KEYRING] = KeyRing(settings, app[TENANT_VIEW])
    app[PORTAL_TOKENS] = PortalTokens(settings)
    app[RATE_LIMITER] = RateLimiter(settings)
    app[SEALER] = Sealer(settings.encryption_keys.get_secret_value())
    app.cleanup_ctx.append(_kafka)
    app.cleanup_ctx.append(_tenants)
    app.cleanup_ctx.append(operator_sink.lifecycle)
    app.add_routes(destinations.routes)
    app.add_routes(tenants.routes)
    app.add_routes(events.routes)
    app.add_routes(deliveries.routes)
    app.add_routes(docs.routes)
    app.add_routes(recoveries.routes)
    app.add_routes(stats.routes)
    app.add_routes(portal.routes)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_recoveries)
    app.add_routes(
        health_routes(
            {"kafka": lambda: _kafka_ready(app), "database": lambda: _database_ready(app)}
        )
    )
    return app


async def _kafka_ready(app: web.Application) -> bool:
    view = app.get(VIEW)
    if view is None or not view.ready.is_set() or not app[TENANT_VIEW].ready.is_set():
        return False
    await view.end_offsets()  # the broker answers now, not just at start-up
    return True


async def _database_ready(app: web.Application) -> bool:
    pool = app.get(DB)
    if pool is None:
        return False
    async with pool.acquire() as connection:
        return bool(await connection.fetchval("select 1"))


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Own the PostgreSQL pool (the query index); the API starts even if it is down."""
    app[DB] = await create_pool(app[SETTINGS].database_url)
    try:
        await migrate(app[DB])
    except (OSError, asyncpg.PostgresError) as exc:
        # The API still publishes while the index is down; /readyz says what is missing.
        log.warning("could not migrate the database: %s", exc)
    try:
        yield
    finally:
        await app[DB].close()


async def _recoveries(app: web.Application) -> AsyncIterator[None]:
    """Own the recovery jobs this process runs, and the loop that resumes lapsed ones."""
    app[RECOVERIES] = Recoveries(app[SETTINGS], app[DB], app[PRODUCER], app[VIEW])
    await app[RECOVERIES].start()
    try:
        yield
    finally:
        await app[RECOVERIES].stop()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    """Own the producer (acks=all, idempotent) and the destinations view for the app's life."""
    settings = app[SETTINGS]
    producer = event_producer(settings, f"{settings.app_id}-api")
    view = DestinationView(settings.kafka_bootstrap)
    await producer.start()
    await view.start()
    app[PRODUCER] = producer
    app[VIEW] = view
    app[DESTINATIONS] = Destinations(settings, view, producer, app[SEALER])
    try:
        yield
    finally:
        await view.stop()
        await producer.stop()


async def _tenants(app: web.Application) -> AsyncIterator[None]:
    """Follow `tenant-changes` for the app's life. The API serves only once the view has
    read the topic to its end: before that a minted key, or a deleted tenant, is unknown."""
    settings = app[SETTINGS]
    view = app[TENANT_VIEW]
    await view.start()
    try:
        await asyncio.wait_for(view.ready.wait(), TENANT_VIEW_START_TIMEOUT_S)
        app[TENANTS] = Tenants(settings, view, app[PRODUCER], app[DESTINATIONS])
        yield
    finally:
        await view.stop()
