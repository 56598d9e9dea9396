"""Portal session tokens: short-lived HS256 JWTs that let a tenant's end customer use the portal.

The platform asks for one (POST /v2/tenants/{id}/portal-sessions); the portal page sends it
as `Authorization: Bearer <jwt>` and the auth middleware (api/auth.py) verifies it on every
call: signature, `exp`, `iss`, `aud`, and that its tenant (`sub`) is still live. A token is
not an API key: its `portal` role reaches only the routes marked for it.

Tokens are never logged; PyJWT's errors name the failed check, never the token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from api.errors import ApiError, RequestValidationError
from pipeline import ids
from pipeline.settings import Settings
from pipeline.sinks.fields import FieldErrors, http_url, string, unknown_fields

ISSUER = "herald"
AUDIENCE = "herald-portal"
ALGORITHM = "HS256"
SESSION_ID = "ps_"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti"]
PRIMARY_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_THEME_NAME = 200
SESSION_FIELDS = {"return_url", "theme", "expires_in_s"}
THEME_FIELDS = {"primary_color", "logo_url", "name"}


class InvalidToken(Exception):
    """A bearer token that is no valid portal session token (why is in the message)."""


@dataclass(frozen=True)
class SessionRequest:
    """A validated portal-sessions body."""

    return_url: str | None
    theme: dict[str, str] | None
    expires_in_s: int


def parse_request(body: Any, settings: Settings) -> SessionRequest:
    """The fields of a POST /v2/tenants/{id}/portal-sessions body (every one optional)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RequestValidationError({"body": ["must be a JSON object."]})
    errors = FieldErrors()
    for unknown in sorted(set(body) - SESSION_FIELDS):
        errors.add(unknown, "is not a known field.")
    return_url = _url(errors, body.get("return_url"), "return_url")
    theme = _theme(errors, body.get("theme"))
    expires_in_s = _expires_in_s(errors, body.get("expires_in_s"), settings)
    if errors:
        raise RequestValidationError(errors.by_field)
    return SessionRequest(return_url, theme, expires_in_s)


def _theme(errors: FieldErrors, raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.add("theme", "must be an object with primary_color, logo_url and name.")
        return None
    unknown_fields(errors, raw, "theme", THEME_FIELDS)
    theme: dict[str, str] = {}
    color = raw.get("primary_color")
    if color is not None:
        if isinstance(color, str) and PRIMARY_COLOR.fullmatch(color):
            theme["primary_color"] = color
        else:
            errors.add("theme.primary_color", "must be a color like '#1a2b3c'.")
    logo_url = _url(errors, raw.get("logo_url"), "theme.logo_url")
    if logo_url is not None:
        theme["logo_url"] = logo_url
    name = string(errors, raw, "theme", "name", required=False, max_length=MAX_THEME_NAME)
    if name is not None:
        theme["name"] = name
    return theme


def _url(errors: FieldErrors, raw: Any, field: str) -> str | None:
    """An absolute http(s) URL of printable ASCII only (RFC 3986's characters, encoded as
    needed): the portal puts it in a link or an image, where a control character or a space
    has no business."""
    url = http_url(errors, raw, field, required=False)
    if url is not None and not (url.isascii() and url.isprintable() and " " not in url):
        errors.add(field, "must be a URL of printable ASCII characters (percent-encode others).")
        return None
    return url


def _expires_in_s(errors: FieldErrors, raw: Any, settings: Settings) -> int:
    if raw is None:
        return settings.portal_session_default_s
    low, high = 60, settings.portal_session_max_s
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        errors.add("expires_in_s", f"must be an integer number of seconds, {low} to {high}.")
        return settings.portal_session_default_s
    return raw


class PortalTokens:
    """Mints and verifies portal session tokens with the deployment's signing key."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.portal_signing_key
        self._key = secret.get_secret_value() if secret is not None else None

    @property
    def configured(self) -> bool:
        """True if a signing key is set (without one, no token is minted or accepted)."""
        return bool(self._key)

    def mint(self, tenant_id: str, request: SessionRequest) -> tuple[str, dict[str, Any]]:
        """A signed token for the tenant, and its claims."""
        if not self._key:
            raise ApiError(
                503,
                "portal_not_configured",
                "Portal sessions are not configured: set HERALD_PORTAL_SIGNING_KEY.",
                error_type="api_error",
            )
        issued_s = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": tenant_id,
            "iat": issued_s,
            "exp": issued_s + request.expires_in_s,
            "jti": ids.new_id(SESSION_ID),
        }
        if request.return_url is not None:
            claims["return_url"] = request.return_url
        if request.theme:
            claims["theme"] = request.theme
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), claims

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unexpired token; InvalidToken otherwise."""
        if not self._key:
            raise InvalidToken("portal sessions are not configured")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The portal session has expired.") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The portal session token is not valid.") from exc
        if not isinstance(claims.get("sub"), str):
            raise InvalidToken("The portal session token is not valid.")
        return claims
