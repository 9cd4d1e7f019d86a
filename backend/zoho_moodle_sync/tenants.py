"""Tenants (schools): lookup, creation and field mapping. Flushes, never commits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.errors import ConfigurationError, NotFound
from zoho_moodle_sync.mapping import FieldMapping

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class TenantContext:
    """What the pipeline needs to know about the tenant a request belongs to."""

    id: int
    slug: str
    mapping: FieldMapping


def context_of(tenant: Tenant) -> TenantContext:
    return TenantContext(id=tenant.id, slug=tenant.slug, mapping=mapping_of(tenant.config))


def mapping_of(config: dict[str, Any]) -> FieldMapping:
    try:
        return FieldMapping.model_validate(config.get("mapping") or {})
    except ValidationError as exc:
        raise ConfigurationError(f"the tenant's field mapping is invalid: {exc}") from None


def get_by_slug(session: Session, slug: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.slug == slug))


def require_active(session: Session, slug: str) -> Tenant:
    tenant = get_by_slug(session, slug)
    if tenant is None or tenant.disabled_at is not None:
        raise NotFound(f"no active tenant {slug!r}")
    return tenant


def create(session: Session, *, slug: str, name: str | None = None) -> Tenant:
    if not _SLUG.match(slug):
        raise ConfigurationError(
            "a tenant slug is 1-63 lower-case letters, digits, '-' or '_', starting with a "
            f"letter or digit: {slug!r}"
        )
    if get_by_slug(session, slug) is not None:
        raise ConfigurationError(f"tenant {slug!r} exists already")
    tenant = Tenant(slug=slug, name=name or slug, config={})
    session.add(tenant)
    session.flush()
    return tenant


def ensure(session: Session, slug: str) -> Tenant:
    """The tenant `slug`, created if it does not exist (the single-tenant install's default)."""
    return get_by_slug(session, slug) or create(session, slug=slug)


def list_all(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.slug)))


def set_mapping(session: Session, tenant: Tenant, mapping: dict[str, Any]) -> FieldMapping:
    """Validate and store a tenant's field mapping; refuses an invalid one with the reason."""
    try:
        parsed = FieldMapping.model_validate(mapping)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid field mapping: {exc}") from None
    tenant.config = {**tenant.config, "mapping": parsed.model_dump(exclude_defaults=True)}
    session.flush()
    return parsed
