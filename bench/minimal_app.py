"""The floor the benchmarks compare the service with: a minimal durable FastAPI app.

    python bench/minimal_app.py --database-url postgresql://... --port 8001

Any `POST` (whatever its path) needs `Authorization: Bearer $WEBHOOK_SECRET`. Its JSON body is
decoded with orjson; the records of a `{"data": [...]}` body, or else the body itself, are
stored in one transaction per request, one row each (route, zoho id and the record encoded
again with orjson), and the answer is `{"stored": n}`. Nothing else: no validation, no event,
no history, no outbox. The record column is `text` (`--record-type jsonb` makes PostgreSQL
parse and store it as the service stores raw records: about twice the database's work).

- PostgreSQL: `COPY` (text format) over a pool of 10 connections (the service's pool size),
  lz4 TOAST compression where the server has it (as the service sets it), fsync and
  synchronous commit as the server is configured.
- SQLite: `executemany` on one connection (SQLite has one writer), WAL, `synchronous=FULL`, the
  service's checkpoint interval.

The table `bench_minimal_records` is created if missing, beside the service's tables.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
import psycopg
import uvicorn
from fastapi import FastAPI, Request, Response

TABLE = "bench_minimal_records"
POOL_SIZE = 10

Row = tuple[str, str, str]
"""route, zoho id, the record as JSON text."""


class RecordStore(Protocol):
    async def open(self) -> None: ...

    async def store(self, rows: Sequence[Row]) -> None: ...

    async def close(self) -> None: ...


class PostgresStore:
    def __init__(self, url: str, record_type: str) -> None:
        self.url = url
        self.record_type = record_type
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(POOL_SIZE):
            connection = await psycopg.AsyncConnection.connect(self.url)
            await connection.execute(
                "SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings"
                " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
            )
            await connection.commit()
            self.idle.put_nowait(connection)
        connection = await self.idle.get()
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
            "received_at timestamptz NOT NULL DEFAULT now(), route text NOT NULL, "
            f"zoho_id text NOT NULL, record {self.record_type} NOT NULL)"
        )
        await connection.commit()
        self.idle.put_nowait(connection)

    async def store(self, rows: Sequence[Row]) -> None:
        connection = await self.idle.get()
        try:
            async with connection.transaction(), connection.cursor() as cursor:
                copy_sql = f"COPY {TABLE} (route, zoho_id, record) FROM STDIN"
                async with cursor.copy(copy_sql) as copy:
                    for row in rows:
                        await copy.write_row(row)
        finally:
            self.idle.put_nowait(connection)

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self.connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA wal_autocheckpoint=10000")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, "
            "received_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, route TEXT NOT NULL, "
            "zoho_id TEXT NOT NULL, record TEXT NOT NULL)"
        )
        self.connection = connection

    def _write(self, rows: Sequence[Row]) -> None:
        assert self.connection is not None
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            self.connection.executemany(
                f"INSERT INTO {TABLE} (route, zoho_id, record) VALUES (?, ?, ?)",  # noqa: S608
                rows,
            )
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    async def store(self, rows: Sequence[Row]) -> None:
        async with self.lock:
            await asyncio.to_thread(self._write, rows)

    async def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def record_store(database_url: str, record_type: str = "text") -> RecordStore:
    """The store for a SQLAlchemy-style URL, as the service is given it."""
    if database_url.startswith("sqlite"):
        return SqliteStore(database_url.split("///", 1)[1])
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if database_url.startswith(prefix):
            database_url = "postgresql://" + database_url.removeprefix(prefix)
    return PostgresStore(database_url, record_type)


def create_app(store: RecordStore, secret: str) -> FastAPI:
    expected = f"Bearer {secret}".encode()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/{path:path}")
    async def store_body(request: Request) -> Response:
        credential = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(credential, expected):
            return Response(b'{"error":"unauthenticated"}', 401, media_type="application/json")
        document = orjson.loads(await request.body())
        records = document.get("data") if isinstance(document, dict) else None
        if not isinstance(records, list):
            records = [document]
        route = request.url.path
        rows = [
            (route, str(r.get("id") or r.get("zoho_id") or ""), orjson.dumps(r).decode())
            for r in records
        ]
        await store.store(rows)
        return Response(orjson.dumps({"stored": len(rows)}), media_type="application/json")

    return app


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--database-url", required=True)
    arguments.add_argument("--host", default="127.0.0.1")
    arguments.add_argument("--port", type=int, default=8001)
    arguments.add_argument(
        "--record-type",
        choices=["text", "jsonb"],
        default="text",
        help="PostgreSQL column type of the stored records (default text)",
    )
    args = arguments.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        arguments.error("set WEBHOOK_SECRET")
    app = create_app(record_store(args.database_url, args.record_type), secret)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
