"""Process-wide settings, read once from the environment (and `.env`), validated early."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/zoho_moodle_sync.db"


class Settings(BaseSettings):
    """Every setting has a default that works for the embedded SQLite install."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    default_tenant: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_records: int = Field(default=1000, ge=1, le=100_000)
    parked_sweep_seconds: float = Field(default=30.0, ge=0)

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
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file for a file-backed SQLite URL, else None."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split("///", 1)[1] if "///" in self.database_url else ""
        return Path(path) if path and path != ":memory:" else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
