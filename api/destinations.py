"""Destination operations: every write is a change record folded by the pipeline.

The API never writes a full destination record. It appends a change to
`destination-changes` and waits until its own view of `destinations` has the folded
result, so the response (and any read after it) shows the change.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from api.auth import Principal
from api.errors import ApiError, not_found, unavailable
from api.publishing import publish_events
from api.stable_ids import IdSource
from pipeline import ids
from pipeline.credentials import merged, with_public_names
from pipeline.crypto import Sealer
from pipeline.destinations import INACTIVE
from pipeline.policy import TEST_EVENT_TYPE
from pipeline.settings import Settings
from pipeline.signing import generate_secret, rotated
from pipeline.timeutil import now_iso
from pipeline.topics import DESTINATION_CHANGES
from pipeline.view import DestinationView, ViewTimeout

# A credential change based on a record another change replaced is merged again on the
# newer one; this many times in a row is a write storm on one destination, not a race.
CREDENTIAL_ATTEMPTS = 5


class Destinations:
    """Create, change and act on destinations of one tenant at a time."""

    def __init__(
        self, settings: Settings, view: DestinationView, producer: AIOKafkaProducer, sealer: Sealer
    ) -> None:
        self._settings = settings
        self._view = view
        self._producer = producer
        self._sealer = sealer

    def get(self, principal: Principal, destination_id: str) -> dict[str, Any]:
        """The tenant's destination, or 404 (also for another tenant's)."""
        record = self._view.get(principal.tenant, destination_id)
        if record is None:
            raise not_found("event destination")
        return record

    def all_for(self, principal: Principal) -> list[dict[str, Any]]:
        """The tenant's destinations, newest first."""
        mine = self._view.all(principal.tenant)
        return sorted(mine, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    async def create(
        self, principal: Principal, fields: dict[str, Any], source: IdSource | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """The folded record, and the generated webhook secret if one was made.

        Under an Idempotency-Key (`source`), the id and the change are the same on every
        run, so a retry after a timeout (the change appended, its fold not seen) finds the
        destination it created, or appends the same change, which the fold takes as done.
        Ids are scoped per tenant: another tenant's destination of this id is no conflict.
        """
        source = source or IdSource()
        destination_id = fields["id"] or source.id(ids.DESTINATION)
        change_id = source.id(ids.CHANGE, "create")
        existing = self._view.get(principal.tenant, destination_id)
        if existing is not None:
            if existing.get("generation") != change_id:
                raise _taken(destination_id)
            return existing, self._generated(fields, existing)  # an earlier run created it
        credentials, generated = self._with_generated_secret(fields["type"], fields["credentials"])
        # Events published before this call began are not routed to the new destination.
        routes_from = {str(p): o for p, o in (await self._stamp()).items()}
        record = await self._change(
            principal.tenant,
            destination_id,
            "create",
            change_id,
            fields={
                "tenant": principal.tenant,
                "name": fields["name"],
                "description": fields["description"],
                "type": fields["type"],
                "events": fields["events"],
                "metadata": fields["metadata"],
                "rate_limit": fields["rate_limit"],
                "filter": fields["filter"],
                "ordering": fields["ordering"],
                "config": fields["config"],
                "sealed": self._seal(credentials, destination_id),
                "routes_from": routes_from,
            },
        )
        if not record.get("change_ok"):
            raise _taken(destination_id)
        return record, generated and self._generated(fields, record)

    def _generated(self, fields: dict[str, Any], record: dict[str, Any]) -> str | None:
        """The secret generated for the record (the one it holds: an earlier run's, if the
        same change was appended twice), when the request gave none."""
        if fields["type"] != "webhook" or fields["credentials"].get("secret"):
            return None
        return str(self._open(record).get("secret") or "") or None

    async def update(
        self, principal: Principal, destination_id: str, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Apply a validated PATCH; a type change needs the new type's config (422).

        A config change merges the credentials against the record it read; if another
        credential change was folded first, the fold refuses it and the merge is redone on
        the newer record (see pipeline.destinations).
        """
        current = self.get(principal, destination_id)
        new_type = changes.get("type", current["type"])
        if new_type != current["type"] and "config" not in changes:
            raise ApiError(
                422,
                "config_required",
                f"Changing type to '{new_type}' needs the '{new_type}' object.",
                field=new_type,
            )
        given = changes.pop("credentials", {})
        config = changes.pop("config", None)
        generated = None
        if config is not None and new_type != current["type"]:
            given, generated = self._with_generated_secret(new_type, given)
        for _ in range(CREDENTIAL_ATTEMPTS):
            fields = dict(changes)
            extra: dict[str, Any] = {}
            if config is not None:
                fields.update(self._merged_config(current, new_type, config, given))
                extra["sealed_base"] = current.get("sealed_version") or 0
            record = await self._change(
                principal.tenant, destination_id, "update", fields=fields, **extra
            )
            if record.get("change_ok") or not extra:
                break
            current = self.get(principal, destination_id)
        return self._settled(record), generated

    def _merged_config(
        self, current: dict[str, Any], new_type: str, config: dict[str, Any], given: dict[str, Any]
    ) -> dict[str, Any]:
        """`config` and `sealed` of a PATCH that gives the type's config object: of the same
        type, merged with the stored credentials; of another type, its own alone."""
        if new_type == current["type"]:
            stored = (current.get("config") or {}, self._open(current))
            config, credentials = merged(new_type, stored, config, given)
        else:
            credentials = given
            config = with_public_names(new_type, config, credentials)
        return {"config": config, "sealed": self._seal(credentials, current["id"])}

    async def set_enabled(
        self, principal: Principal, destination_id: str, enabled: bool
    ) -> dict[str, Any]:
        """Enable (active, or pending if it never succeeded) or disable (inactive)."""
        self.get(principal, destination_id)
        op = "enable" if enabled else "disable"
        extra = {} if enabled else {"reason": "disabled by user"}
        return self._checked(await self._change(principal.tenant, destination_id, op, **extra))

    async def delete(self, principal: Principal, destination_id: str) -> None:
        """Delete: nothing more is delivered to it, queued or retrying deliveries included."""
        self.get(principal, destination_id)
        self._checked(await self._change(principal.tenant, destination_id, "delete"))

    async def rotate_secret(
        self, principal: Principal, destination_id: str
    ) -> tuple[dict[str, Any], str]:
        """A new webhook secret; the old ones keep signing alongside for 24 h."""
        current = self.get(principal, destination_id)
        secret = generate_secret()
        for _ in range(CREDENTIAL_ATTEMPTS):
            if current["type"] != "webhook":  # checked again: a PATCH may change the type
                raise ApiError(422, "not_a_webhook", "Only webhook destinations have a secret.")
            credentials = rotated(self._open(current), secret, time.time())
            record = await self._change(
                principal.tenant,
                destination_id,
                "update",
                fields={"sealed": self._seal(credentials, destination_id)},
                sealed_base=current.get("sealed_version") or 0,
            )
            if record.get("change_ok"):
                break
            current = self.get(principal, destination_id)
        return self._settled(record), secret

    async def send_test(self, principal: Principal, destination_id: str) -> dict[str, Any]:
        """Publish an `event_destination.test` event routed to this destination only."""
        record = self.get(principal, destination_id)
        if record["status"] == INACTIVE:
            raise ApiError(
                422,
                "destination_inactive",
                "The destination is inactive: enable it before sending a test.",
            )
        event = {
            "id": ids.new_id(ids.EVENT),
            "object": "event",
            "type": TEST_EVENT_TYPE,
            "data": {"destination_id": destination_id, "message": "A test event from Herald."},
            "created_at": now_iso(),
            "tenant": principal.tenant,
            "destination_id": destination_id,
        }
        await publish_events(self._view, self._producer, [event])
        return event

    # -- helpers ---------------------------------------------------------------------------

    def _with_generated_secret(
        self, destination_type: str, credentials: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        if destination_type != "webhook" or credentials.get("secret"):
            return credentials, None
        secret = generate_secret()
        return {**credentials, "secret": secret}, secret

    def _seal(self, credentials: dict[str, Any], destination_id: str) -> str | None:
        return self._sealer.seal(credentials, destination_id) if credentials else None

    def _open(self, record: dict[str, Any]) -> dict[str, Any]:
        sealed = record.get("sealed")
        opened = dict(self._sealer.open(sealed, record["id"])) if sealed else {}
        legacy_headers = (record.get("config") or {}).get("custom_headers")
        if isinstance(legacy_headers, dict):  # kept in the public config before sealing
            opened.setdefault("custom_headers", legacy_headers)
        return opened

    def _checked(self, record: dict[str, Any]) -> dict[str, Any]:
        if not record.get("change_ok"):
            # The destination went away between our read and the fold (a concurrent delete).
            raise not_found("event destination")
        return record

    def _settled(self, record: dict[str, Any]) -> dict[str, Any]:
        """Like _checked, for a credential change refused on every attempt (409)."""
        if not record.get("change_ok") and not record.get("deleted"):
            raise ApiError(
                409,
                "concurrent_change",
                "The destination's configuration kept changing during this call; retry.",
            )
        return self._checked(record)

    async def _stamp(self) -> dict[int, int]:
        try:
            return await self._view.stamp()
        except KafkaError as exc:
            raise unavailable("The event broker is unreachable; nothing was changed.") from exc

    async def _change(
        self,
        tenant: str,
        destination_id: str,
        op: str,
        change_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append a change record (keyed `tenant/id`) and wait until this process's view
        has folded it."""
        change_id = change_id or ids.new_id(ids.CHANGE)
        change = {"change_id": change_id, "op": op, "at": now_iso(), **extra}
        current = None if op == "create" else self._view.get(tenant, destination_id)
        folded = self._view.expect_change(change_id)
        try:
            await self._producer.send_and_wait(
                DESTINATION_CHANGES,
                orjson.dumps(change),
                key=ids.change_key(tenant, destination_id, current).encode(),
            )
            return await self._view.wait_change(
                folded, change_id, self._settings.view_wait_timeout_s
            )
        except KafkaError as exc:
            folded.cancel()
            raise unavailable("The event broker is unreachable; nothing was changed.") from exc
        except ViewTimeout as exc:
            raise unavailable(
                "The change was accepted but is not visible yet; retry with the same "
                "Idempotency-Key to get its result."
            ) from exc


def _taken(destination_id: str) -> ApiError:
    return ApiError(
        409,
        "resource_already_exists",
        f"A destination with id '{destination_id}' already exists.",
        field="id",
    )
