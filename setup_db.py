#!/usr/bin/env python3
"""Create the database or upgrade it to the latest schema, then make sure the default tenant exists.

    python setup_db.py                                   # DATABASE_URL from the environment or .env
    python setup_db.py --database-url postgresql://user:pass@host/dbname

Safe to run any number of times, and from several hosts at once (PostgreSQL migrations take an
advisory lock). Same as `zoho-moodle-sync db upgrade`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs from a clone without `pip install -e .` as long as the dependencies are installed.
sys.path.insert(0, str(Path(__file__).resolve().parent / "backend"))

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database-url", help="overrides DATABASE_URL")
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    args = parser.parse_args(argv)

    overrides = {"database_url": args.database_url} if args.database_url else {}
    settings = Settings(**overrides)
    db = Database.from_settings(settings)
    try:
        migrate.upgrade(db.engine, args.revision)
        with db.sessions.begin() as session:
            tenants.ensure(session, settings.default_tenant)
        print(f"database at revision {migrate.current_revision(db.engine)}")
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
