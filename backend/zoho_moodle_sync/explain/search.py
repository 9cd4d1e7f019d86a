"""Finding the record a person means (`GET /v1/explain?q=`): a Zoho id of any entity, a
student number, or an e-mail address of a student or teacher."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY
from zoho_moodle_sync.errors import NotFound, Unprocessable
from zoho_moodle_sync.explain.answer import explain_in
from zoho_moodle_sync.explain.models import Match, Search
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.zoho.ids import is_zoho_id

MAX_MATCHES = 50
_EMAIL_FIELDS = ("email", "academic_email")


def search(db: Database, *, tenant_id: int, query: str, settings: Settings) -> Search:
    """Every record of the tenant that `query` names, and the explanation when only one does."""
    query = query.strip()
    if not query or len(query) > 200:
        raise Unprocessable(
            "q must be a Zoho id, a student number or an e-mail address (1-200 characters)",
            details=[{"field": "q", "message": "empty or too long"}],
        )
    with db.sessions() as session:
        matches = find(session, tenant_id=tenant_id, query=query)
        if not matches:
            raise NotFound(
                f"no record of this tenant has the Zoho id, student number or e-mail {query!r}"
            )
        explanation = None
        if len(matches) == 1:
            only = matches[0]
            explanation = explain_in(
                session,
                tenant_id=tenant_id,
                spec=ENTITY_BY_KEY[only.entity],
                zoho_id=only.zoho_id,
                settings=settings,
            )
        return Search(query=query, matches=matches, explanation=explanation)


def find(session: Session, *, tenant_id: int, query: str) -> list[Match]:
    if is_zoho_id(query):
        return _by_zoho_id(session, tenant_id, query)
    lowered = query.lower()
    found: list[Match] = []
    for spec in ENTITIES:
        table = ENTITY_TABLES[spec.key]
        conditions = []
        matched = ""
        if "@" in query:
            names = [name for name in _EMAIL_FIELDS if name in spec.field_by_name]
            conditions = [func.lower(table.c[name]) == lowered for name in names]
            matched = "email"
        elif "student_number" in spec.field_by_name:
            conditions = [func.lower(table.c.student_number) == lowered]
            matched = "student_number"
        if not conditions:
            continue
        rows = session.execute(
            select(table.c.zoho_id, table.c.data)
            .where(table.c.tenant_id == tenant_id, or_(*conditions))
            .order_by(table.c.id)
            .limit(MAX_MATCHES)
        )
        found += [
            Match(entity=spec.key, zoho_id=z, name=spec.name_of(d), matched=matched)
            for z, d in rows
        ]
    return found[:MAX_MATCHES]


def _by_zoho_id(session: Session, tenant_id: int, zoho_id: str) -> list[Match]:
    """A Zoho id is unique in an org, but the service does not know the module of an id alone:
    every entity is looked at (stored, parked, or only ever refused)."""
    found = []
    for spec in ENTITIES:
        table = ENTITY_TABLES[spec.key]
        data = session.scalar(
            select(table.c.data).where(table.c.tenant_id == tenant_id, table.c.zoho_id == zoho_id)
        )
        known = (
            data is not None
            or session.scalar(
                select(ParkedRecord.id).where(
                    ParkedRecord.tenant_id == tenant_id,
                    ParkedRecord.entity == spec.key,
                    ParkedRecord.zoho_id == zoho_id,
                )
            )
            or session.scalar(
                select(RecordOutcome.id)
                .where(
                    RecordOutcome.tenant_id == tenant_id,
                    RecordOutcome.entity == spec.key,
                    RecordOutcome.zoho_id == zoho_id,
                )
                .limit(1)
            )
        )
        if known:
            name = spec.name_of(data) if data else zoho_id
            found.append(
                Match(entity=spec.key, zoho_id=zoho_id, name=name or zoho_id, matched="zoho_id")
            )
    return found
