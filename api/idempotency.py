"""Idempotency-Key on POST: the same key and body get the first response back.

Keys are claimed in PostgreSQL (shared by every API process) before the handler runs, so
two concurrent requests with one key cannot both act. Stored responses are sealed like
credentials: one may hold a generated webhook secret. A 5xx is not kept, so the client's
retry runs the request again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from api.app_keys import DB, SEALER
from api.errors import ApiError, RequestValidationError, unavailable
from api.responses import principal_of
from pipeline.crypto import CryptoError

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLAIM = """insert into idempotency_keys (tenant, key, request_hash) values ($1, $2, $3)
on conflict do nothing returning 1"""
EXISTING = "select request_hash, status, body from idempotency_keys where tenant = $1 and key = $2"
STORE = "update idempotency_keys set status = $3, body = $4 where tenant = $1 and key = $2"
RELEASE = "delete from idempotency_keys where tenant = $1 and key = $2"


def _conflict(message: str, code: str = "idempotency_error") -> ApiError:
    return ApiError(409, code, message, field=HEADER, error_type="idempotency_error")


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Replay, refuse (409) or run-and-remember a POST that carries an Idempotency-Key."""
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None or "principal" not in request:
        return await handler(request)
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise RequestValidationError({HEADER: [f"must be 1 to {MAX_KEY_LENGTH} characters."]})
    tenant = principal_of(request).tenant
    body = await request.read()
    request_hash = hashlib.sha256(
        f"{request.method} {request.rel_url}\n".encode() + body
    ).hexdigest()
    pool = request.app[DB]
    try:
        async with pool.acquire() as connection:
            claimed = await connection.fetchval(CLAIM, tenant, key, request_hash)
            if not claimed:
                return await _replay(request, connection, tenant, key, request_hash)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise unavailable("Idempotency keys cannot be checked right now; retry.") from exc
    try:
        response = await handler(request)
    except (ApiError, RequestValidationError) as exc:
        response = exc.response(request["request_id"])
    except BaseException:
        await _release(pool, tenant, key)
        raise
    await _remember(request, pool, tenant, key, response)
    return response


async def _replay(
    request: web.Request, connection: asyncpg.Connection, tenant: str, key: str, request_hash: str
) -> web.StreamResponse:
    row = await connection.fetchrow(EXISTING, tenant, key)
    if row is None:  # released between our claim and this read: the client may retry
        raise _conflict(
            "A request with this Idempotency-Key just failed; retry it.", "idempotency_key_in_use"
        )
    if row["request_hash"] != request_hash:
        raise _conflict("This Idempotency-Key was used with a different request.")
    if row["status"] is None:
        raise _conflict(
            "A request with this Idempotency-Key is still in progress.", "idempotency_key_in_use"
        )
    try:
        stored = request.app[SEALER].open(row["body"].decode(), f"{tenant}/{key}")
    except CryptoError as exc:
        # Sealed under a key no longer configured: the request ran, so never run it again.
        log.warning("a stored idempotent response cannot be opened (retired encryption key?)")
        raise _conflict(
            "The response stored for this Idempotency-Key can no longer be read; "
            "send the request with a new key.",
            "idempotency_key_unreadable",
        ) from exc
    response = web.Response(
        status=int(row["status"]),
        body=str(stored["body"]).encode(),
        content_type="application/json",
    )
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def _remember(
    request: web.Request, pool: asyncpg.Pool, tenant: str, key: str, response: web.StreamResponse
) -> None:
    if response.status >= 500 or not isinstance(response, web.Response):
        await _release(pool, tenant, key)
        return
    body = response.body if isinstance(response.body, bytes) else b""
    sealed = request.app[SEALER].seal({"body": body.decode()}, f"{tenant}/{key}")
    try:
        async with pool.acquire() as connection:
            await connection.execute(STORE, tenant, key, response.status, sealed.encode())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # The request has run; its key stays claimed (a retry gets 409, never a second run).
        return


async def _release(pool: asyncpg.Pool, tenant: str, key: str) -> None:
    try:
        async with pool.acquire() as connection:
            await connection.execute(RELEASE, tenant, key)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return
