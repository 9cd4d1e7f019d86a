"""Rows inserted in bulk, with the keys of those actually inserted: the one place that talks to
the PostgreSQL driver directly, because SQLAlchemy's way is the slow one for this."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def insert_new(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str]
) -> list[Any]:
    """Insert `rows` (every row with the same columns), skipping those whose `key` columns are
    taken already; returns the last `key` column of the rows inserted.

    SQLAlchemy runs an INSERT ... RETURNING of many rows as multi-row VALUES statements: on
    PostgreSQL each is new text with thousands of parameters, which psycopg and the server both
    parse afresh, about a quarter of the server's CPU in a bulk import. There the rows go
    instead through psycopg's pipelined `executemany` of one prepared single-row statement,
    each value converted by its column type as SQLAlchemy would."""
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key))
        return list(connection.scalars(statement.returning(table.c[key[-1]]), list(rows)))
    sql, convert = _compiled_insert(table, tuple(key), tuple(rows[0]), connection.dialect)
    dbapi_connection = connection.connection
    cursor: Any = dbapi_connection.cursor()
    try:
        if len(rows) == 1:  # a webhook's record: no pipeline to open and close
            cursor.execute(sql, convert(rows[0]))
            return [row[0] for row in cursor.fetchall()]
        cursor.executemany(sql, [convert(row) for row in rows], returning=True)
        inserted: list[Any] = []
        while True:
            inserted.extend(row[0] for row in cursor.fetchall())
            if not cursor.nextset():
                return inserted
    except psycopg.Error as failure:
        error: Any = failure
        # What SQLAlchemy would do with a driver error: its own exception type (so a database
        # restart is an OperationalError to the callers), and a broken connection dropped.
        gone = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if gone:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, None, error, psycopg.Error, hide_parameters=True, connection_invalidated=gone
        ) from error
    finally:
        cursor.close()


@functools.lru_cache(maxsize=64)
def _compiled_insert(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...], dialect: Dialect
) -> tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]]]:
    statement = (
        postgresql.insert(table)
        .on_conflict_do_nothing(index_elements=list(key))
        .returning(table.c[key[-1]])
    )
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    processors = {
        name: processor
        for name, bind in compiled.binds.items()
        if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }

    def convert(row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: processors[name](value) if name in processors else value
            for name, value in row.items()
        }

    return compiled.string, convert
