"""Tables of authentication and idempotency: tenant credentials (stored as digests only) and the
responses remembered per Idempotency-Key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zoho_moodle_sync.db.base import Base, BigId, UTCDateTime, utcnow


class TenantCredential(Base):
    """A secret a caller presents for a tenant. Only its SHA-256 is stored: the secret itself
    is shown once, when it is made."""

    __tablename__ = "tenant_credentials"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(20))
    """`webhook` (any route of the tenant) or `channel` (a Notifications API channel token)."""
    label: Mapped[str] = mapped_column(String(100))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(12))
    """The first characters, so an operator can tell credentials apart."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "tenant_id", "kind"),)


class IdempotentRequest(Base):
    """The first answer to a request with an Idempotency-Key (or, for webhooks, to a body seen
    before), replayed for repeats until it expires."""

    __tablename__ = "idempotent_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(300))
    request_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))
    """running → done."""
    status_code: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("tenant_id", "key"), Index(None, "expires_at"))


class ZohoToken(Base):
    """The current Zoho access token of one OAuth client, shared by every process (Zoho allows
    only 10 refreshes per 10 minutes). Stored sealed with SECRET_KEY."""

    __tablename__ = "zoho_tokens"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    sealed_token: Mapped[str] = mapped_column(String(1000))
    api_domain: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
