"""JSON responses encoded with orjson, and the one place errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from zoho_moodle_sync.errors import ConfigurationError, RequestRejected
from zoho_moodle_sync.ingress.events import Answer

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable: malformed_body, unauthenticated, ...")
    message: str = Field(description="What was wrong, in plain words")
    details: Any = Field(default=None, description="Which field, or where in the body")
    event_id: int | None = Field(
        default=None, description="The stored request this answer is about, for a replay"
    )


class ErrorBody(BaseModel):
    """Every refusal and failure has this shape."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "The body cannot be read: empty, not valid JSON (with the position), not UTF-8",
    401: "No credential, or one that matches nothing",
    403: "X-Tenant-ID names another tenant, or a tenant's secret on an admin route",
    404: "Unknown entity, tenant, record, job or event",
    409: "The same request (Idempotency-Key) is still being processed, or the job cannot be "
    "retried in its state",
    413: "The body is over MAX_BODY_BYTES",
    415: "A content type that is neither JSON nor a form",
    422: "Readable but unusable: a field, parameter or limit is wrong (`details` names it)",
    500: "A defect in the service; the request was logged (and stored, if it was a sync or "
    "webhook)",
    503: "The database cannot be reached; try again shortly",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for the OpenAPI document: all share `ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS),
        status_code=status_code,
        media_type="application/json",
    )


def answer_response(answer: Answer) -> Response:
    """What ingress answered, as the HTTP response."""
    return Response(
        content=answer.body,
        status_code=answer.status_code,
        media_type="application/json",
        headers=answer.headers or None,
    )


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    event_id: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    if event_id is not None:
        error["event_id"] = event_id
    response = json_response({"error": error}, status_code)
    response.headers.update(headers or {})
    return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestRejected)
    async def _rejected(_request: Request, exc: RequestRejected) -> Response:
        return json_response(exc.document(), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        return error_response(422, "unprocessable", "The request is invalid", details=details)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: OperationalError) -> Response:
        log.error("database unavailable: %s", exc.orig or exc)
        return error_response(
            503,
            "database_unavailable",
            "The database is unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(ConfigurationError)
    async def _misconfigured(_request: Request, exc: ConfigurationError) -> Response:
        log.error("configuration error: %s", exc)
        return error_response(500, "configuration_error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return error_response(
            500,
            "internal_error",
            "Unexpected error (a defect in the service; it was logged). Requests to /v1/sync and "
            "the webhook routes are stored first, and can be replayed once it is fixed",
        )
