"""Engines and sessions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from zoho_moodle_sync.settings import Settings


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


_LZ4_WHERE_AVAILABLE = """
    SELECT set_config('default_toast_compression', 'lz4', false)
    FROM pg_settings
    WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)
"""


POOL_RECYCLE_SECONDS = 1800
"""A pooled PostgreSQL connection is replaced after this long, before a firewall or proxy
drops it silently."""


def make_engine(database_url: str, *, pool_size: int = 10) -> Engine:
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url)
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No `SELECT 1` round trip at every checkout (a request or a job takes several): a
        # connection is checked without one, by `_on_checkout`.
        pool_pre_ping=False,
        pool_recycle=POOL_RECYCLE_SECONDS,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Request bodies and raw records are large JSON, compressed when stored: lz4 does that
        # several times faster than the default pglz. Servers without lz4 (before 14, or
        # built without it) keep pglz; values of either kind are read back the same.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(_LZ4_WHERE_AVAILABLE)
        dbapi_connection.commit()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if not _still_open(dbapi_connection):
            # The pool replaces it with a new connection (SQLAlchemy retries the checkout).
            raise exc.DisconnectionError("the database closed this pooled connection")

    return engine


def _still_open(dbapi_connection: Any) -> bool:
    """Whether an idle psycopg connection is still usable, without a round trip: the server
    sends nothing on an idle connection unless it ends it (a restart, an administrator, an idle
    timeout), so a socket with something to read means the connection is gone."""
    import psycopg  # loaded already with the connection; not at all on SQLite

    if dbapi_connection.closed or dbapi_connection.broken:
        return False
    try:
        socket = dbapi_connection.pgconn.socket
        if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
            poll = select.poll()
            poll.register(socket, select.POLLIN)
            return not poll.poll(0)
        readable, _, _ = select.select([socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return False
    return not readable


def _sqlite_engine(database_url: str) -> Engine:
    engine = create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": 30},
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event open transactions, so they can be BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        # Checkpoint the WAL into the database file every ~40 MB instead of every ~4 MB: a
        # request of 500 records writes several MB, so the default made every commit also a
        # checkpoint. Commits stay durable either way (the WAL is synced at each one).
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: a read that later writes cannot then fail with
        # SQLITE_BUSY when another writer committed in between.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def private_sqlite_file(path: Path) -> None:
    """The embedded database holds personal data: its folder (when the service makes it) is
    readable by its owner only, and so are the file and the journal files SQLite makes beside
    it (SQLite gives them the database file's own permissions)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        if file.exists():
            file.chmod(0o600)


@contextlib.contextmanager
def on_its_own(session: Session) -> Iterator[Connection]:
    """A connection to the session's database, outside its transaction, on which every
    statement commits on its own (autocommit): for a write that is one statement, atomic by
    itself, it spares the `BEGIN` and `COMMIT` round trips."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class Database:
    """The engine and session factory of one process."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.engine = make_engine(database_url)
        self.sessions = make_sessionmaker(self.engine)
        self._batch_turn = threading.RLock() if self.is_sqlite else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        path = settings.sqlite_path()
        if path is not None:
            private_sqlite_file(path)
        return cls(settings.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def batch_turn(self) -> Iterator[None]:
        """On SQLite, one batch of records at a time in this process, from storing its body
        to committing its records (a thread holding the turn may take it again): SQLite
        writes one transaction at a time anyway, and a second batch stored and decoded while
        the first holds the file only added its memory (docs/performance.md). On PostgreSQL,
        batches run side by side."""
        if self._batch_turn is None:
            yield
            return
        with self._batch_turn:
            yield

    def dispose(self) -> None:
        self.engine.dispose()
