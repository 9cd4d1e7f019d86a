"""Fixtures of the integration tests, which run on SQLite and PostgreSQL (the `db` fixture) on
schemas built by the real migrations.

Every test starts from the same random state and id sequence, so a failure reproduces with the
same records.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import factory.random
import pytest
from sqlalchemy import delete

from tests.factories import ZohoRecordFactory
from zoho_moodle_sync.db.base import Base
from zoho_moodle_sync.db.session import Database


@pytest.fixture(autouse=True)
def same_records_every_run() -> Iterator[None]:
    """The same random state and id sequence for every test; both are put back afterwards."""
    state = factory.random.get_random_state()
    resume_at = ZohoRecordFactory._meta.next_sequence()
    factory.random.reseed_random(20250510)
    ZohoRecordFactory.reset_sequence(1)
    yield
    factory.random.set_random_state(state)
    ZohoRecordFactory.reset_sequence(resume_at)


@pytest.fixture(scope="session")
def databases() -> Iterator[dict[str, Database]]:
    """One migrated database per backend for the whole session, opened when first needed."""
    opened: dict[str, Database] = {}
    yield opened
    for database in opened.values():
        database.dispose()


@pytest.fixture
def db(
    backend: str,
    databases: dict[str, Database],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Database:
    """The shared `db` contract (a database migrated by the real migrations, empty for each
    test), on one database and engine per backend for the session, emptied with DELETE.

    Per-test databases cost about 0.4 s a test on PostgreSQL (TRUNCATE creates and fsyncs new
    files for every table and index) and a cold statement cache on both backends.
    """
    database = databases.get(backend)
    if database is None:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("integration") / "integration.db"
            shutil.copy(Path(request.getfixturevalue("sqlite_template")), path)
            database = Database(f"sqlite:///{path}")
        else:
            database = Database(str(request.getfixturevalue("postgres_url")))
        databases[backend] = database
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    return database


@pytest.fixture
def database_url(db: Database) -> str:
    """The URL of the database `db` is on (for fixtures that build their own, like `settings`)."""
    return db.url
