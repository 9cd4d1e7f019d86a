"""Tenants (schools): lookup, creation and field mapping. Flushes, never commits."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.errors import ConfigurationError, NotFound
from zoho_moodle_sync.field_mapping import FieldMapping
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.projection import DeliveryPolicy, enrolment_dates_changed
from zoho_moodle_sync.sealing import seal, unseal
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.zoho import ZohoCredentials

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StoredTenant(Protocol):
    """What is stored of a tenant: the ORM row, or the columns a request read of it."""

    @property
    def id(self) -> int: ...

    @property
    def slug(self) -> str: ...

    @property
    def config(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TenantContext:
    """What the pipeline needs to know about the tenant a request belongs to."""

    id: int
    slug: str
    mapping: FieldMapping


def context_of(tenant: StoredTenant) -> TenantContext:
    return TenantContext(id=tenant.id, slug=tenant.slug, mapping=mapping_of(tenant.config))


def plain_reasons(error: ValidationError) -> str:
    """A validation error as the reasons a person reads: where, and what is wrong there;
    without pydantic's error types, input echoes and documentation links."""
    reasons = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "not a key this document has"
        reasons.append(f"{where}: {message}" if where else message)
    return "; ".join(reasons)


def mapping_of(config: dict[str, Any]) -> FieldMapping:
    """The tenant's field mapping, validated once per distinct mapping (every request needs it,
    and a mapping is frozen)."""
    return _validated_mapping(
        orjson.dumps(config.get("mapping") or {}, option=orjson.OPT_SORT_KEYS)
    )


@functools.lru_cache(maxsize=256)
def _validated_mapping(mapping: bytes) -> FieldMapping:
    try:
        return FieldMapping.model_validate(orjson.loads(mapping))
    except ValidationError as exc:
        raise ConfigurationError(
            f"the tenant's field mapping is invalid: {plain_reasons(exc)}"
        ) from None


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
        raise ConfigurationError(f"invalid field mapping: {plain_reasons(exc)}") from None
    tenant.config = {**tenant.config, "mapping": parsed.model_dump(exclude_defaults=True)}
    session.flush()
    return parsed


@dataclass(frozen=True)
class MoodleConnection:
    base_url: str
    token: SecretStr


def moodle_connection(tenant: Tenant, settings: Settings) -> MoodleConnection | None:
    """The tenant's Moodle: its own stored one, else (for the default tenant) MOODLE_URL and
    MOODLE_TOKEN from the settings; None while not configured."""
    stored = tenant.config.get("moodle") or {}
    if stored.get("base_url") and stored.get("token"):
        return MoodleConnection(stored["base_url"], unseal(stored["token"], settings.secret_key))
    if tenant.slug == settings.default_tenant and settings.moodle_url:
        if not settings.moodle_token.get_secret_value():
            raise ConfigurationError("MOODLE_URL is set but MOODLE_TOKEN is empty")
        return MoodleConnection(settings.moodle_url, settings.moodle_token)
    return None


def set_moodle(
    session: Session, tenant: Tenant, *, base_url: str, token: str, settings: Settings
) -> None:
    """Store the tenant's Moodle URL and its token, sealed with SECRET_KEY."""
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"the Moodle URL must start with http:// or https://: {base_url!r}"
        )
    if not token.strip():
        raise ConfigurationError("the Moodle token is empty")
    sealed = seal(token.strip(), settings.secret_key)
    tenant.config = {**tenant.config, "moodle": {"base_url": base_url.rstrip("/"), "token": sealed}}
    session.flush()


def zoho_credentials(tenant: StoredTenant, settings: Settings) -> ZohoCredentials | None:
    """The tenant's Zoho API client, from its stored configuration or, for the default tenant,
    from the ZOHO_* settings; None while not configured."""
    stored = tenant.config.get("zoho") or {}
    if stored.get("client_id"):
        return ZohoCredentials(
            client_id=stored["client_id"],
            client_secret=unseal(stored["client_secret"], settings.secret_key),
            refresh_token=unseal(stored["refresh_token"], settings.secret_key),
            data_centre=stored.get("data_centre", "us"),
        )
    if tenant.slug == settings.default_tenant and settings.zoho_client_id:
        return ZohoCredentials(
            client_id=settings.zoho_client_id,
            client_secret=settings.zoho_client_secret,
            refresh_token=settings.zoho_refresh_token,
            data_centre=settings.zoho_data_centre,
            accounts_url=settings.zoho_accounts_url or None,
        )
    return None


def delivery_policy(tenant: Tenant) -> DeliveryPolicy:
    try:
        return DeliveryPolicy.model_validate(tenant.config.get("delivery") or {})
    except ValidationError as exc:
        raise ConfigurationError(
            f"the tenant's delivery policy is invalid: {plain_reasons(exc)}"
        ) from None


@dataclass(frozen=True)
class PolicyChange:
    policy: DeliveryPolicy
    requeued_enrolments: int
    """Enrolments queued again because their Moodle times change under the new policy."""


def set_delivery_policy(session: Session, tenant: Tenant, policy: dict[str, Any]) -> PolicyChange:
    """Validate and store a tenant's delivery policy; refuses an invalid one with the reason.

    When the enrolment dates change (`enrolment_dates`, the grace, or the time zone they are
    read in), every enrolment delivered active is queued again: it reaches Moodle with its new
    times, and those that would end access now go through the mass-change guard."""
    try:
        parsed = DeliveryPolicy.model_validate(policy)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid delivery policy: {plain_reasons(exc)}") from None
    try:
        before = delivery_policy(tenant)
    except ConfigurationError:
        before = None
    tenant.config = {
        **tenant.config,
        "delivery": parsed.model_dump(mode="json", exclude_defaults=True),
    }
    session.flush()
    requeued = 0
    if before is None or enrolment_dates_changed(before, parsed):
        requeued = operator.requeue_delivered(session, tenant_id=tenant.id, entity="enrollments")
    return PolicyChange(parsed, requeued)
