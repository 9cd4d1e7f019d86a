"""The Alembic revisions on a fresh, empty database of each backend: up, down, up again, and a
migrated schema that is the one the SQLAlchemy models describe."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, make_url, text

from tests.factories import StudentRecordFactory
from zoho_moodle_sync.db import jobs as _job_tables  # noqa: F401  (registers its tables)
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.base import Base
from zoho_moodle_sync.db.session import Database, make_engine
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.tenants import context_of, ensure

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database nothing has touched: a new SQLite file, or a new PostgreSQL database created
    next to the test database and dropped afterwards (the test database is left alone)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = os.environ.get("TEST_DATABASE_URL", "")
    if not server:
        pytest.skip("PostgreSQL not configured (set TEST_DATABASE_URL)")
    name = f"zms_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_engine(empty_database_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def shape(engine: Engine) -> dict[str, list[tuple[str | None, tuple[str | None, ...]]]]:
    """Every table with its columns and indexes (name and columns), as the database has them."""
    found = inspect(engine)
    return {
        table: sorted(
            [("column", (column["name"],)) for column in found.get_columns(table)]
            + [(index["name"], tuple(index["column_names"])) for index in found.get_indexes(table)]
        )
        for table in found.get_table_names()
    }


def store_a_student(url: str) -> str:
    """Store one student through the pipeline; the schema is usable, not just present."""
    database = Database(url)
    try:
        with database.sessions.begin() as session:
            tenant = context_of(ensure(session, "default"))
            student = StudentRecordFactory()
            results, _ = pipeline.process_records(
                session,
                tenant=tenant,
                entity=ENTITY_BY_KEY["students"],
                raw_records=[student],
                event_id=None,
            )
        assert [r.outcome.value for r in results] == ["NEW"]
        with database.engine.connect() as connection:
            return str(connection.execute(text("SELECT zoho_id FROM students")).scalar_one())
    finally:
        database.dispose()


def test_upgrade_downgrade_upgrade_on_a_fresh_database(
    empty_database_url: str, fresh_engine: Engine
) -> None:
    assert migrate.current_revision(fresh_engine) is None
    assert tables(fresh_engine) == set()

    migrate.upgrade(fresh_engine)

    assert migrate.current_revision(fresh_engine) == migrate.head_revision() is not None
    assert tables(fresh_engine) == MODEL_TABLES | {"alembic_version"}
    store_a_student(empty_database_url)

    migrate.downgrade(fresh_engine, "base")

    assert migrate.current_revision(fresh_engine) is None
    assert tables(fresh_engine) == {"alembic_version"}

    migrate.upgrade(fresh_engine)

    assert migrate.current_revision(fresh_engine) == migrate.head_revision()
    assert tables(fresh_engine) == MODEL_TABLES | {"alembic_version"}
    student_id = store_a_student(empty_database_url)

    migrate.upgrade(fresh_engine)  # at head already: nothing to do, nothing lost

    assert migrate.current_revision(fresh_engine) == migrate.head_revision()
    with fresh_engine.connect() as connection:
        kept = connection.execute(text("SELECT zoho_id FROM students")).scalars().all()
    assert kept == [student_id]


def test_each_revision_upgrades_and_downgrades_one_step_at_a_time(fresh_engine: Engine) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[-1] == migrate.head_revision()
    seen = []

    for revision in revisions:
        migrate.upgrade(fresh_engine, revision)
        assert migrate.current_revision(fresh_engine) == revision
        seen.append(shape(fresh_engine))
    # Each downgrade brings back exactly the schema of the revision before it.
    for step in reversed(range(len(revisions))):
        assert migrate.current_revision(fresh_engine) == revisions[step]
        assert shape(fresh_engine) == seen[step]
        migrate.downgrade(fresh_engine, "-1")

    assert migrate.current_revision(fresh_engine) is None
    assert tables(fresh_engine) == {"alembic_version"}
    assert set(seen[-1]) == MODEL_TABLES | {"alembic_version"}


def schema_differences(engine: Engine) -> list[Any]:
    """What `alembic revision --autogenerate` would write to bring the schema to the models."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_the_migrated_schema_is_the_one_the_models_describe(fresh_engine: Engine) -> None:
    migrate.upgrade(fresh_engine)

    differences = schema_differences(fresh_engine)

    assert differences == []
    # Autogenerate matches indexes by name only: indexes sharing a name hide each other (as in
    # revision 0001), so the indexes are compared by their columns too.
    found = inspect(fresh_engine)
    migrated = {
        (table, index["name"], tuple(index["column_names"]))
        for table in MODEL_TABLES
        for index in found.get_indexes(table)
        if not index.get("duplicates_constraint")  # PostgreSQL's index of a UNIQUE constraint
    }
    modelled = {
        (table.name, index.name, tuple(column.name for column in index.columns))
        for table in Base.metadata.sorted_tables
        for index in table.indexes
    }
    assert migrated == modelled


def test_a_record_without_warnings_has_none_stored_and_0011_mends_older_ones(
    empty_database_url: str, fresh_engine: Engine
) -> None:
    migrate.upgrade(fresh_engine, "0010")
    zoho_id = store_a_student(empty_database_url)
    no_warnings = text("SELECT warnings IS NULL FROM students WHERE zoho_id = :id")
    with fresh_engine.begin() as connection:
        assert connection.scalar(no_warnings, {"id": zoho_id})
        # What revisions before 0011 stored: the JSON null.
        connection.execute(text("UPDATE students SET warnings = 'null'"))
        assert not connection.scalar(no_warnings, {"id": zoho_id})

    migrate.upgrade(fresh_engine)

    with fresh_engine.connect() as connection:
        assert connection.scalar(no_warnings, {"id": zoho_id})
