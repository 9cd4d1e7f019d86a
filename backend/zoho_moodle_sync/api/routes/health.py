"""`GET /v1/health`: is the process up and its database reachable."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import __version__
from zoho_moodle_sync.api.deps import DatabaseDep
from zoho_moodle_sync.api.responses import json_response
from zoho_moodle_sync.db import migrate

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", summary="Liveness and database reachability (no authentication)")
async def health(db: DatabaseDep) -> Response:
    def check() -> str | None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return migrate.current_revision(db.engine)

    try:
        revision = await run_in_threadpool(check)
    except Exception as exc:  # any failure to reach the database means "not healthy"
        return json_response(
            {"status": "unavailable", "database": type(exc).__name__, "version": __version__},
            503,
        )
    return json_response(
        {
            "status": "ok",
            "database": db.engine.dialect.name,
            "schema": revision,
            "schema_current": revision == migrate.head_revision(),
            "version": __version__,
        }
    )
