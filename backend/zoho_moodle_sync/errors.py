"""Every exception the service raises on purpose, in one tree.

    SyncServiceError
    ├── RequestRejected            the caller sent something we refuse (always a 4xx; never retried)
    │   ├── MalformedBody          400  unreadable JSON or form body (with the position)
    │   ├── Unauthenticated        401  missing or wrong credential
    │   ├── Forbidden              403  a valid credential for something it may not touch
    │   ├── NotFound               404  unknown entity, record or event
    │   ├── Conflict               409  the same request is still being processed
    │   ├── BodyTooLarge           413  over the configured body size
    │   ├── UnsupportedMediaType   415  a content type we cannot read
    │   └── Unprocessable          422  readable but unusable (batch too long, unknown module, ...)
    ├── ConfigurationError         our settings or a tenant's mapping are wrong (operator's fault)
    ├── RetryableError             an outside system failed in a way that may pass: retry later
    │   ├── MoodleUnavailable      network error, timeout, HTTP 5xx, a reply that is not JSON
    │   └── ZohoUnavailable        network error, timeout, HTTP 5xx
    │       └── ZohoRateLimited    429 / TOO_MANY_REQUESTS (with the delay Zoho asked for, if any)
    └── PermanentError             an outside system refused; retrying the same thing cannot help
        ├── MoodleRejected         Moodle answered with an exception body (errorcode, message)
        │   └── MoodleAccessDenied the token or the service user's capabilities are wrong: pause the
        │                          tenant's delivery instead of failing every job
        └── ZohoRejected           Zoho answered with an error code (code, message, HTTP status)
            └── ZohoAuthError      OAuth refresh or token refused (bad client, revoked token)

`RequestRejected` is turned into an HTTP answer in exactly one place, `api.app`. Messages never
contain a secret: the classes below take only what is safe to show.
"""

from __future__ import annotations

from typing import Any


class SyncServiceError(Exception):
    """Root of every exception this service raises on purpose."""


class RequestRejected(SyncServiceError):
    """The caller's request is refused; `status_code` and `code` go straight into the answer."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.event_id: int | None = None
        """The stored inbound event this refusal is about, when there is one."""

    def document(self) -> dict[str, Any]:
        """The refusal as the JSON body of its answer: `{"error": {code, message, ...}}`."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        if self.event_id is not None:
            error["event_id"] = self.event_id
        return {"error": error}


class MalformedBody(RequestRejected):
    status_code = 400
    code = "malformed_body"


class Unauthenticated(RequestRejected):
    status_code = 401
    code = "unauthenticated"


class Forbidden(RequestRejected):
    status_code = 403
    code = "forbidden"


class NotFound(RequestRejected):
    status_code = 404
    code = "not_found"


class Conflict(RequestRejected):
    status_code = 409
    code = "conflict"


class BodyTooLarge(RequestRejected):
    status_code = 413
    code = "body_too_large"


class UnsupportedMediaType(RequestRejected):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(RequestRejected):
    status_code = 422
    code = "unprocessable"


class ConfigurationError(SyncServiceError):
    """A setting or a tenant's field mapping is wrong; the operator must fix it."""


class RetryableError(SyncServiceError):
    """An outside system failed in a way that may pass; the caller retries with backoff."""


class PermanentError(SyncServiceError):
    """An outside system refused the request; sending it again unchanged cannot succeed."""


class MoodleUnavailable(RetryableError):
    """Moodle could not be reached, timed out, answered 5xx, or answered something unreadable."""


class MoodleRejected(PermanentError):
    """Moodle answered HTTP 200 with an exception body."""

    def __init__(
        self,
        *,
        errorcode: str,
        message: str,
        exception: str = "",
        debuginfo: str | None = None,
        function: str = "",
    ) -> None:
        text = f"{function}: {errorcode}: {message}" if function else f"{errorcode}: {message}"
        if debuginfo:
            text = f"{text} ({debuginfo})"
        super().__init__(text)
        self.errorcode = errorcode
        self.message = message
        self.exception = exception
        self.debuginfo = debuginfo
        self.function = function


class MoodleAccessDenied(MoodleRejected):
    """The token is invalid or lacks a capability: every call for the tenant will fail alike."""


class ZohoUnavailable(RetryableError):
    """Zoho could not be reached, timed out or answered 5xx."""


class ZohoRateLimited(ZohoUnavailable):
    """Zoho answered 429 / TOO_MANY_REQUESTS."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ZohoRejected(PermanentError):
    """Zoho answered with an error code that retrying cannot fix."""

    def __init__(self, *, code: str, message: str, status_code: int) -> None:
        super().__init__(f"Zoho {status_code} {code}: {message}")
        self.code = code
        self.message = message
        self.status_code = status_code


class ZohoAuthError(ZohoRejected):
    """The OAuth refresh or the access token was refused for good (revoked, wrong client)."""
