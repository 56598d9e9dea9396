"""Idempotency-Key on POST: the same key and body get the first response back.

A key belongs to the API key that used it: a stored response is replayed only to that API
key, and only after the request passed authentication and the role check (both run in the
outer middleware), so no other key can read what a request stored (a generated webhook
secret, say). Stored responses are sealed like credentials.

Keys are claimed in PostgreSQL (shared by every API process) before the handler runs, so
two concurrent requests with one key cannot both act. A claim is a lease, renewed while the
request runs: if its process dies, the lease runs out and a retry takes the key over instead
of getting 409 "in progress" until the key expires.

A 5xx is not replayed: the key stays bound to its body, and a retry with the same body runs
the request again, with the ids and time of the first run (api.stable_ids), so what the
failed run did (events published, a destination change appended) is not done twice. A
handler may also store a response as resumable (a batch whose events were not all
confirmed): a retry then continues it rather than replaying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from api.app_keys import DB, SEALER, SETTINGS
from api.errors import ApiError, RequestValidationError, unavailable
from api.responses import principal_of
from api.stable_ids import ATTEMPT, Attempt, seed_of
from pipeline import ids
from pipeline.crypto import CryptoError, Sealer
from pipeline.db import DATABASE_ERRORS

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WHERE = "tenant = $1 and api_key = $2 and key = $3"
# A new key, a free one (its last run failed), or one whose lease ran out (its process
# died) is ours; a finished one, another body's, or one held by a live request is not.
CLAIM = """
insert into idempotency_keys as k (tenant, api_key, key, request_hash, owner, lease_until)
values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
on conflict (tenant, api_key, key) do update
    set owner = excluded.owner, lease_until = excluded.lease_until
    where k.request_hash = excluded.request_hash
      and (k.status is null or k.resumable)
      and (k.lease_until is null or k.lease_until <= now())
returning k.created_at, k.status, k.body, k.resumable"""
EXISTING = f"select request_hash, status, body, resumable from idempotency_keys where {WHERE}"  # noqa: S608 - constant
RENEW = f"""update idempotency_keys set lease_until = now() + make_interval(secs => $5)
where {WHERE} and owner = $4"""  # noqa: S608 - constant
STORE = f"""update idempotency_keys
set status = $5, body = $6, resumable = $7, owner = null, lease_until = null
where {WHERE} and owner = $4"""  # noqa: S608 - constant
FREE = f"update idempotency_keys set owner = null, lease_until = null where {WHERE} and owner = $4"  # noqa: S608 - constant


@dataclass(frozen=True)
class Claim:
    """One request's hold on one key: (tenant, API key, key) and who holds it."""

    tenant: str
    api_key: str
    key: str
    owner: str

    @property
    def where(self) -> tuple[str, str, str, str]:
        """The parameters $1 to $4 of RENEW, STORE and FREE."""
        return self.tenant, self.api_key, self.key, self.owner

    @property
    def context(self) -> str:
        """What a stored response is sealed to (it opens for this key only)."""
        return f"{self.tenant}/{self.api_key}/{self.key}"


def _conflict(message: str, code: str = "idempotency_error") -> ApiError:
    return ApiError(409, code, message, field=HEADER, error_type="idempotency_error")


def _in_use() -> ApiError:
    return _conflict(
        "A request with this Idempotency-Key is still in progress.", "idempotency_key_in_use"
    )


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Replay, refuse (409) or run-and-remember a POST that carries an Idempotency-Key."""
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None or "principal" not in request:
        return await handler(request)
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise RequestValidationError({HEADER: [f"must be 1 to {MAX_KEY_LENGTH} characters."]})
    principal = principal_of(request)
    claim = Claim(principal.tenant, principal.key_sha256, key, ids.new_id("own_"))
    body = await request.read()
    request_hash = hashlib.sha256(
        f"{request.method} {request.rel_url}\n".encode() + body
    ).hexdigest()
    pool = request.app[DB]
    lease_s = request.app[SETTINGS].idempotency_lease_s
    try:
        async with pool.acquire() as connection:
            row = await connection.fetchrow(
                CLAIM, *claim.where[:3], request_hash, claim.owner, lease_s
            )
            if row is None:
                return await _replay(request, connection, claim, request_hash)
    except DATABASE_ERRORS as exc:
        raise unavailable("Idempotency keys cannot be checked right now; retry.") from exc
    attempt = Attempt(
        row["created_at"],
        seed_of(*claim.where[:3]),
        previous=_previous(request.app[SEALER], claim, row),
    )
    request[ATTEMPT] = attempt
    return await _run(request, handler, pool, claim, lease_s)


def _previous(sealer: Sealer, claim: Claim, row: asyncpg.Record) -> Any:
    """The unfinished response an earlier run stored, for the handler to continue."""
    if row["status"] is None or not row["resumable"]:
        return None
    try:
        return orjson.loads(str(sealer.open(row["body"].decode(), claim.context)["body"]))
    except CryptoError:
        return None  # unreadable: the handler starts over (its ids are the same anyway)


async def _run(
    request: web.Request, handler: Handler, pool: asyncpg.Pool, claim: Claim, lease_s: float
) -> web.StreamResponse:
    renewing = asyncio.create_task(_renew(pool, claim, lease_s), name="idempotency-lease")
    try:
        response = await handler(request)
    except (ApiError, RequestValidationError) as exc:
        response = exc.response(request["request_id"])
    except BaseException:
        await _free(pool, claim)
        raise
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    await _remember(request, pool, claim, response)
    return response


async def _renew(pool: asyncpg.Pool, claim: Claim, lease_s: float) -> None:
    """Extend the lease while the request runs, so only a dead process loses its key."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            async with pool.acquire() as connection:
                await connection.execute(RENEW, *claim.where, lease_s)
        except DATABASE_ERRORS as exc:
            log.warning("an idempotency lease could not be renewed: %s", exc)


async def _replay(
    request: web.Request, connection: asyncpg.Connection, claim: Claim, request_hash: str
) -> web.StreamResponse:
    row = await connection.fetchrow(EXISTING, *claim.where[:3])
    if row is None:  # expired and swept between our claim and this read: retry
        raise _conflict(
            "A request with this Idempotency-Key just expired; retry it.", "idempotency_key_in_use"
        )
    if row["request_hash"] != request_hash:
        raise _conflict("This Idempotency-Key was used with a different request.")
    if row["status"] is None or row["resumable"]:
        raise _in_use()
    try:
        stored = request.app[SEALER].open(row["body"].decode(), claim.context)
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
    request: web.Request, pool: asyncpg.Pool, claim: Claim, response: web.StreamResponse
) -> None:
    if response.status >= 500 or not isinstance(response, web.Response):
        await _free(pool, claim)
        return
    body = response.body if isinstance(response.body, bytes) else b""
    sealed = request.app[SEALER].seal({"body": body.decode()}, claim.context)
    resumable = request[ATTEMPT].resumable
    try:
        async with pool.acquire() as connection:
            done = await connection.execute(
                STORE, *claim.where, response.status, sealed.encode(), resumable
            )
    except DATABASE_ERRORS:
        # The request has run; the lease runs out and a retry runs it again with the same
        # ids (api.stable_ids), so nothing it published or created is made twice.
        return
    if done == "UPDATE 0":
        log.warning("an idempotency lease ran out before the response was stored")


async def _free(pool: asyncpg.Pool, claim: Claim) -> None:
    """Keep the key bound to its body, but let a retry run it now."""
    try:
        async with pool.acquire() as connection:
            await connection.execute(FREE, *claim.where)
    except DATABASE_ERRORS:
        return  # the lease runs out instead
