"""Rows written in bulk: new rows with the keys of those actually inserted, and rows appended
with `COPY`. The one place that talks to the PostgreSQL driver directly, because SQLAlchemy's
way is the slow one for these; SQLite goes through SQLAlchemy."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

Row = Mapping[str, Any]


def insert_new(
    session: Session, table: Table, rows: Sequence[Row], *, key: Sequence[str]
) -> list[Any]:
    """Insert `rows` (every row with the same columns), skipping those whose `key` columns are
    taken already; returns the last `key` column of the rows inserted.

    SQLAlchemy runs an INSERT ... RETURNING of many rows as multi-row VALUES statements: on
    PostgreSQL each is new text with thousands of parameters, which psycopg and the server both
    parse afresh, about a quarter of the server's CPU in a bulk import. There the rows go
    instead through psycopg's pipelined `executemany` of one prepared single-row statement."""
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key))
        return list(connection.scalars(statement.returning(table.c[key[-1]]), list(rows)))
    statement_sql, convert = _compiled_insert(table, tuple(key), tuple(rows[0]), connection.dialect)
    with _driver_cursor(connection, statement_sql) as cursor:
        if len(rows) == 1:  # a webhook's record: no pipeline to open and close
            cursor.execute(statement_sql, convert(rows[0]))
            return [row[0] for row in cursor.fetchall()]
        cursor.executemany(statement_sql, [convert(row) for row in rows], returning=True)
        inserted: list[Any] = []
        while True:
            inserted.extend(row[0] for row in cursor.fetchall())
            if not cursor.nextset():
                return inserted


def append(session: Session, table: Table, rows: Sequence[Row]) -> None:
    """Insert `rows` (every row with the same columns) that no constraint can refuse but a
    foreign key: on PostgreSQL with `COPY`, which costs a fraction of one INSERT per row."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql" or len(rows) == 1:
        connection.execute(insert(table), list(rows))
        return
    from psycopg import sql  # PostgreSQL's driver, loaded only where it is used

    columns = tuple(rows[0])
    convert = _converter(table, columns, connection.dialect)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with _driver_cursor(connection, f"COPY {table.name}") as cursor, cursor.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(tuple(convert(row).values()))


@contextlib.contextmanager
def _driver_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """A psycopg cursor on the session's connection and transaction. A driver error is raised
    as SQLAlchemy would raise it: its own exception type (so a database restart is an
    OperationalError to the callers), the parameters left out, a broken connection dropped."""
    import psycopg  # PostgreSQL's driver, loaded only where it is used

    dbapi_connection = connection.connection
    cursor: Any = dbapi_connection.cursor()
    try:
        yield cursor
    except psycopg.Error as failure:
        error: Any = failure
        gone = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if gone:
            connection.invalidate(error)
        raise DBAPIError.instance(
            statement, None, error, psycopg.Error, hide_parameters=True, connection_invalidated=gone
        ) from error
    finally:
        cursor.close()


@functools.lru_cache(maxsize=64)
def _compiled_insert(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...], dialect: Dialect
) -> tuple[str, Callable[[Row], dict[str, Any]]]:
    statement = (
        postgresql.insert(table)
        .on_conflict_do_nothing(index_elements=list(key))
        .returning(table.c[key[-1]])
    )
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    return compiled.string, _converter(table, columns, dialect)


@functools.lru_cache(maxsize=64)
def _converter(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> Callable[[Row], dict[str, Any]]:
    """A row's values as the driver takes them, each converted by its column's SQLAlchemy type
    as SQLAlchemy itself would (JSON serialised, UTC times, raw records as text)."""
    processors = {
        name: processor
        for name in columns
        if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        is not None
    }

    def convert(row: Row) -> dict[str, Any]:
        return {
            name: processors[name](value) if name in processors else value
            for name, value in row.items()
        }

    return convert
