"""Who is calling: tenant secrets (stored as SHA-256 digests, shown once), their rotation with
an overlap window, Notifications API channel tokens, and the admin token.

Secrets are long random strings, so a plain SHA-256 is the right digest: there is nothing to
brute-force, and a digest can be looked up directly. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, and_, bindparam, event, or_, select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.security import TenantCredential
from zoho_moodle_sync.errors import ConfigurationError
from zoho_moodle_sync.settings import Settings

SECRET_PREFIX = "zms_"  # noqa: S105 (a marker, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(presented: str, expected: SecretStr) -> bool:
    """Constant-time equality of a presented secret and a configured one (never equal if unset)."""
    wanted = expected.get_secret_value()
    if not wanted:
        return False
    return hmac.compare_digest(digest(presented), digest(wanted))


@dataclass(frozen=True)
class CredentialView:
    """What may be shown of a credential: never the secret."""

    id: int
    kind: str
    label: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        now = utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def add_secret(
    session: Session,
    tenant: Tenant,
    *,
    label: str,
    kind: str = "webhook",
    secret: str | None = None,
) -> str:
    """Make a credential for the tenant; returns the secret, which is not stored anywhere."""
    secret = secret or new_secret()
    if len(secret) < 16:
        raise ConfigurationError("a secret must be at least 16 characters long")
    session.add(
        TenantCredential(
            tenant_id=tenant.id,
            kind=kind,
            label=label[:100],
            secret_sha256=digest(secret),
            hint=secret[:8],
        )
    )
    session.flush()
    return secret


def rotate(
    session: Session, tenant: Tenant, *, overlap: timedelta, label: str, kind: str = "webhook"
) -> str:
    """A new secret; the current ones of `kind` keep working for `overlap`, then expire."""
    expire_current(session, tenant, overlap=overlap, kind=kind)
    return add_secret(session, tenant, label=label, kind=kind)


def expire_current(session: Session, tenant: Tenant, *, overlap: timedelta, kind: str) -> None:
    ends = utcnow() + overlap
    session.info[_CHANGED] = True
    session.execute(
        update(TenantCredential)
        .where(
            TenantCredential.tenant_id == tenant.id,
            TenantCredential.kind == kind,
            TenantCredential.revoked_at.is_(None),
            (TenantCredential.expires_at.is_(None)) | (TenantCredential.expires_at > ends),
        )
        .values(expires_at=ends)
    )


def revoke(session: Session, tenant: Tenant, credential_id: int) -> bool:
    credential = session.get(TenantCredential, credential_id)
    if credential is None or credential.tenant_id != tenant.id or credential.revoked_at:
        return False
    credential.revoked_at = utcnow()
    return True


def list_for(session: Session, tenant: Tenant) -> list[CredentialView]:
    rows = session.scalars(
        select(TenantCredential)
        .where(TenantCredential.tenant_id == tenant.id)
        .order_by(TenantCredential.id)
    )
    return [
        CredentialView(
            row.id, row.kind, row.label, row.hint, row.created_at, row.expires_at, row.revoked_at
        )
        for row in rows
    ]


@dataclass(frozen=True)
class CallingTenant:
    """The tenant a credential belongs to, as read with it."""

    id: int
    slug: str
    config: dict[str, Any]


def tenant_for(
    session: Session, presented: str, settings: Settings, *, kind: str = "webhook"
) -> CallingTenant | None:
    """The active tenant whose active credential of `kind` this is, or None. One query: the
    credential with its tenant, and the default tenant when the secret is WEBHOOK_SECRET."""
    if not presented:
        return None
    wanted = digest(presented)
    now = utcnow()
    by_setting = kind == "webhook" and same_secret(presented, settings.webhook_secret)
    recent_key = (wanted, kind, settings.default_tenant if by_setting else None)
    with _recent_lock:
        remembered = _recent.setdefault(session.get_bind().engine, {})
    recent = remembered.get(recent_key)
    if recent is not None:
        until, until_time, tenant = recent
        if time.monotonic() < until and (until_time is None or now < until_time):
            return tenant
        remembered.pop(recent_key, None)
    query = _TENANT_BY_SECRET_OR_SETTING if by_setting else _TENANT_BY_SECRET
    rows = session.connection().execute(
        query, {"digest": wanted, "kind": kind, "default_slug": settings.default_tenant}
    )
    chosen: Any = None
    default: Any = None
    for row in rows:
        if (
            row.secret_sha256 is not None
            and hmac.compare_digest(row.secret_sha256, wanted)
            and (row.expires_at is None or row.expires_at > now)
        ):
            chosen = row
        if row.slug == settings.default_tenant:
            default = row
    if chosen is None and by_setting:
        chosen = default
    if chosen is None or chosen.disabled_at is not None:
        return None
    tenant = CallingTenant(chosen.id, chosen.slug, chosen.config)
    if len(remembered) >= _RECENT_MAX:
        remembered.clear()
    expires_at = chosen.expires_at if chosen.secret_sha256 is not None else None
    remembered[recent_key] = (time.monotonic() + RECENT_SECONDS, expires_at, tenant)
    return tenant


RECENT_SECONDS = 1.0
"""How long a process trusts a credential it has just found valid without looking it up again:
a burst of webhooks costs one look-up a second instead of one each. A credential revoked, a
tenant disabled or reconfigured in another process takes effect within this time; in the
process that committed the change, at once (`_forget_recent`). Refusals are never remembered."""

_RECENT_MAX = 1024
_Remembered = dict[tuple[str, str, str | None], tuple[float, datetime | None, CallingTenant]]
_recent: weakref.WeakKeyDictionary[Engine, _Remembered] = weakref.WeakKeyDictionary()
"""Per database: (digest, kind, the default tenant when the secret is WEBHOOK_SECRET) ->
(until, in the process's monotonic time; the credential's own expiry; the tenant)."""
_recent_lock = threading.Lock()
_CHANGED = "zms.credentials_changed"


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(row, Tenant | TenantCredential) for row in changed):
        session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_recent(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        with _recent_lock:
            for remembered in _recent.values():
                remembered.clear()


@event.listens_for(Session, "after_rollback")
def _keep_recent(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def _tenant_by_secret(*, or_setting: bool) -> Any:
    """The credential's tenant (the credential's columns), and with `or_setting` the default
    tenant too (its credential columns empty unless the secret is also one of its own)."""
    matching = and_(
        TenantCredential.tenant_id == Tenant.id,
        TenantCredential.secret_sha256 == bindparam("digest"),
        TenantCredential.kind == bindparam("kind"),
        TenantCredential.revoked_at.is_(None),
    )
    found = TenantCredential.id.is_not(None)
    query = select(
        Tenant.id,
        Tenant.slug,
        Tenant.config,
        Tenant.disabled_at,
        TenantCredential.secret_sha256,
        TenantCredential.expires_at,
    ).outerjoin(TenantCredential, matching)
    if or_setting:
        return query.where(or_(found, Tenant.slug == bindparam("default_slug")))
    return query.where(found)


_TENANT_BY_SECRET = _tenant_by_secret(or_setting=False)
_TENANT_BY_SECRET_OR_SETTING = _tenant_by_secret(or_setting=True)


def has_any(session: Session, tenant: Tenant, settings: Settings) -> bool:
    """Whether any caller could authenticate as the tenant at all."""
    if tenant.slug == settings.default_tenant and settings.webhook_secret.get_secret_value():
        return True
    return any(view.active for view in list_for(session, tenant) if view.kind == "webhook")


def channel_label(channel_id: str) -> str:
    return f"channel:{channel_id}"


def owns_channel(
    session: Session, tenant: CallingTenant, token: str, channel_id: str | None
) -> bool:
    """Whether `token` is the tenant's token for the Notifications API channel `channel_id`."""
    row = session.scalar(
        select(TenantCredential).where(
            TenantCredential.tenant_id == tenant.id,
            TenantCredential.kind == "channel",
            TenantCredential.secret_sha256 == digest(token),
        )
    )
    return row is not None and channel_id is not None and row.label == channel_label(channel_id)


def opens_admin(session: Session, secret_digest: str, settings: Settings) -> bool:
    """Whether the secret with this digest opens the admin routes, by the rule of the admin
    API: ADMIN_TOKEN when one is set; without one, an active secret of the default tenant. On
    a digest, so that a console session is checked again on every request (a revoked secret or
    a changed admin token ends it) without keeping the secret."""
    admin = settings.admin_token.get_secret_value()
    if admin:
        return hmac.compare_digest(secret_digest, digest(admin))
    own = settings.webhook_secret.get_secret_value()
    if own and hmac.compare_digest(secret_digest, digest(own)):
        return True
    row = session.scalar(
        select(TenantCredential).where(
            TenantCredential.secret_sha256 == secret_digest,
            TenantCredential.kind == "webhook",
            TenantCredential.revoked_at.is_(None),
        )
    )
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        return False
    tenant = session.get(Tenant, row.tenant_id)
    return (
        tenant is not None and tenant.disabled_at is None and tenant.slug == settings.default_tenant
    )
