"""`GET /v1/health`: is the process up and its database reachable (one `SELECT 1`; the schema
revision is read at the first call and again every few minutes, never the migration scripts).
`GET /v1/ready`: the same, with the schema revision read now, and 503 unless it is current."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import __version__
from zoho_moodle_sync.api.deps import DatabaseDep
from zoho_moodle_sync.api.responses import json_response
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database

router = APIRouter(prefix="/v1", tags=["health"])

SCHEMA_CHECK_SECONDS = 300.0
"""How long `/v1/health` trusts the schema revision it read: the schema changes only when an
operator upgrades it, and a process behind it shows up within this time."""


@dataclass
class _Revision:
    db: Database
    revision: str | None
    read_at: float


class SchemaCheck:
    """The database's schema revision as last read, per process; the newest revision the code
    knows is read from the migration scripts once."""

    def __init__(self, refresh_seconds: float = SCHEMA_CHECK_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._last: _Revision | None = None
        self._lock = threading.Lock()

    def revision(self, db: Database, *, fresh: bool = False) -> str | None:
        """Checks the database answers; the revision is read again only when `fresh` or when
        the last reading is old (or was of another database)."""
        last = self._last
        if fresh or last is None or last.db is not db or self._expired(last):
            with self._lock:
                revision = migrate.current_revision(db.engine)
                self._last = _Revision(db, revision, time.monotonic())
            return revision
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return last.revision

    def _expired(self, last: _Revision) -> bool:
        return time.monotonic() - last.read_at > self.refresh_seconds


def _schema_check(request: Request) -> SchemaCheck:
    check: SchemaCheck = request.app.state.schema_check
    return check


async def _answer(db: Database, check: SchemaCheck, *, fresh: bool) -> Response:
    try:
        revision = await run_in_threadpool(lambda: check.revision(db, fresh=fresh))
    except Exception as exc:  # any failure to reach the database means "not healthy"
        return json_response(
            {"status": "unavailable", "database": type(exc).__name__, "version": __version__},
            503,
        )
    current = revision == migrate.head_revision()
    ready = current or not fresh  # only readiness waits for the schema
    return json_response(
        {
            "status": "ok" if ready else "schema_behind",
            "database": db.engine.dialect.name,
            "schema": revision,
            "schema_current": current,
            "version": __version__,
        },
        200 if ready else 503,
    )


@router.get("/health", summary="Liveness and database reachability (no authentication)")
async def health(request: Request, db: DatabaseDep) -> Response:
    return await _answer(db, _schema_check(request), fresh=False)


@router.get(
    "/ready",
    summary="Readiness: the database reachable and its schema current (no authentication)",
)
async def ready(request: Request, db: DatabaseDep) -> Response:
    """Reads the schema revision now; 503 while the database is behind the running code."""
    return await _answer(db, _schema_check(request), fresh=True)
