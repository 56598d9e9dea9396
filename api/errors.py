"""Domain errors → the contract's error bodies, in one place.

ApiError                ErrorResponse: {"errors": [{type, code, message, field}],
                        "request_id"} (401/403/404/409/413/422/429/503 …)
RequestValidationError  ValidationErrorResponse (400): {type, title, status,
                        errors: {field: [messages]}, traceId}
"""

from __future__ import annotations

from aiohttp import web

VALIDATION_TYPE = "https://tools.ietf.org/html/rfc9110#section-15.5.1"


class ApiError(Exception):
    """An error answered with the ErrorResponse body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.error_type = error_type
        self.headers = headers or {}

    def response(self, request_id: str) -> web.Response:
        """The HTTP response for this error."""
        body = {
            "errors": [
                {
                    "type": self.error_type,
                    "code": self.code,
                    "message": self.message,
                    "field": self.field,
                }
            ],
            "request_id": request_id,
        }
        return web.json_response(body, status=self.status, headers=self.headers)


class RequestValidationError(Exception):
    """Invalid request input: every failing field at once, by dotted path."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors

    def response(self, request_id: str) -> web.Response:
        """The 400 ValidationErrorResponse."""
        return web.json_response(validation_body(self.errors, request_id), status=400)


def validation_body(errors: dict[str, list[str]], trace_id: str) -> dict[str, object]:
    """The ValidationErrorResponse body: of a 400, and of a source's rejected record."""
    return {
        "type": VALIDATION_TYPE,
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": errors,
        "traceId": trace_id,
    }


def not_found(what: str = "resource") -> ApiError:
    """404 for anything missing or belonging to another tenant (never reveal which)."""
    return ApiError(404, "resource_missing", f"No such {what}.")


def unauthorized(message: str = "Missing or unknown API key.") -> ApiError:
    """401: no key, a key Herald does not know (or no longer accepts), or a portal session
    token that is invalid or expired."""
    return ApiError(
        401,
        "unauthorized",
        message,
        error_type="authentication_error",
        headers={"WWW-Authenticate": 'Bearer realm="herald"'},
    )


def forbidden(
    message: str = "This API key's role does not allow this request.", field: str | None = None
) -> ApiError:
    """403: the key's role does not allow this call."""
    return ApiError(403, "forbidden", message, field=field, error_type="permission_error")


def unavailable(message: str, retry_after_s: int = 2) -> ApiError:
    """503 with Retry-After: the broker (or the view) is not reachable right now."""
    return ApiError(
        503,
        "service_unavailable",
        message,
        error_type="api_error",
        headers={"Retry-After": str(retry_after_s)},
    )


def too_many_requests(retry_after_s: int) -> ApiError:
    """429 with Retry-After: this API key is over its request rate limit."""
    return ApiError(
        429,
        "rate_limited",
        f"Too many requests for this API key; retry after {retry_after_s} s.",
        error_type="rate_limit_error",
        headers={"Retry-After": str(retry_after_s)},
    )
