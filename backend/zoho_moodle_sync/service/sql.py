"""The service's SQL helpers: ids in chunks, and `IN` lists that stay cheap on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    String,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute, Session

CHUNK = 900
"""Ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits."""


T = TypeVar("T")


def chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def among_ids(
    dialect: str, column: ColumnElement[str] | InstrumentedAttribute[str]
) -> ColumnElement[bool]:
    """`column IN :ids`, for a statement built once per table and database and run with the ids
    as the `ids` parameter (building and cache-keying a statement at every call costs more than
    running it, in the one-record path).

    On PostgreSQL the ids go as one array parameter, unnested: a list of hundreds of parameters
    makes a statement that costs more to build and parse than to run, and `= ANY(array)` gets a
    plan that compares every row with every id once the statement is prepared while the table's
    statistics are not yet current (a first import)."""
    if dialect == "postgresql":
        ids_array = bindparam("ids", type_=postgresql.ARRAY(String))
        return column.in_(select(func.unnest(ids_array)))
    return column.in_(bindparam("ids", expanding=True))


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name
