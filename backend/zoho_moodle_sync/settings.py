"""Process-wide settings, read once from the environment (and `.env`), validated early."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/zoho_moodle_sync.db"


class Settings(BaseSettings):
    """Every setting has a default that works for the embedded SQLite install."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_threads: int = Field(default=8, ge=1, le=200)
    """Threads that run requests' database work at once; further requests wait their turn."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api_docs: Literal["public", "off"] = "public"
    default_tenant: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_records: int = Field(default=1000, ge=1, le=100_000)
    parked_sweep_seconds: float = Field(default=30.0, ge=0)
    retention_days: float = Field(default=90.0, ge=0)

    secret_key: SecretStr = SecretStr("")
    webhook_secret: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    ui_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)
    webhook_repeat_seconds: float = Field(default=600.0, gt=0)
    zoho_client_id: str = ""
    zoho_client_secret: SecretStr = SecretStr("")
    zoho_refresh_token: SecretStr = SecretStr("")
    zoho_data_centre: Literal["us", "eu", "in", "au", "cn", "jp", "ca", "sa", "uk"] = "us"
    zoho_accounts_url: str = ""
    zoho_requests_per_minute: float = Field(default=300.0, ge=0)
    reconcile_minutes: float = Field(default=15.0, ge=0)
    reconcile_overlap_minutes: float = Field(default=5.0, ge=0)
    webhook_fetch_window_seconds: float = Field(default=1.0, ge=0, le=60)
    moodle_check_hours: float = Field(default=24.0, ge=0)
    moodle_url: str = ""
    moodle_token: SecretStr = SecretStr("")
    moodle_timeout_seconds: float = Field(default=60.0, gt=0)
    moodle_max_input_vars: int = Field(default=5000, ge=100)
    moodle_concurrency: int = Field(default=2, ge=1, le=16)
    delivery_coalesce_seconds: float = Field(default=1.0, ge=0, le=60)
    delivery_coalesce_max_seconds: float = Field(default=30.0, ge=0, le=600)
    run_worker: bool | None = None
    worker_batch_size: int = Field(default=250, ge=1, le=1000)
    worker_claim_size: int = Field(default=5000, ge=1, le=20_000)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    worker_lease_seconds: float = Field(default=30.0, ge=3)
    worker_max_attempts: int = Field(default=10, ge=1)
    worker_backoff_seconds: float = Field(default=5.0, gt=0)
    worker_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    worker_wait_seconds: float = Field(default=30.0, gt=0)
    pause_probe_seconds: float = Field(default=300.0, gt=0)
    moodle_probe_max_seconds: float = Field(default=30.0, gt=0)
    moodle_outage_grace_hours: float = Field(default=24.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        if value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgres://")
        if not value.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return value

    @property
    def worker_in_process(self) -> bool:
        """`serve` runs a delivery worker itself: by default only on SQLite, where one process
        owns the database; on PostgreSQL run `zoho-moodle-sync worker` processes instead."""
        return self.is_sqlite if self.run_worker is None else self.run_worker

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file for a file-backed SQLite URL, as an absolute path (a relative one
        is relative to the working directory), else None."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split("///", 1)[1] if "///" in self.database_url else ""
        return Path(path).absolute() if path and path != ":memory:" else None

    def database_label(self) -> str:
        """Which database, in words and without its password: the SQLite file's absolute path,
        or PostgreSQL's host, port and database name."""
        path = self.sqlite_path()
        if path is not None:
            return f"SQLite {path}"
        if self.is_sqlite:
            return "SQLite in memory"
        where = self.database_url.split("://", 1)[-1].split("@", 1)[-1].split("?", 1)[0]
        return f"PostgreSQL {where}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
