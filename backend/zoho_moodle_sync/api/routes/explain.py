"""`GET /v1/explain/{entity}/{zoho_id}` and `GET /v1/explain?q=`: why a record is, or is not,
in Moodle, in plain words first, then the facts behind it."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import explain
from zoho_moodle_sync.api.deps import DatabaseDep, SettingsDep, TenantDep
from zoho_moodle_sync.api.responses import error_responses, json_response
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.explain import Explanation, Search
from zoho_moodle_sync.settings import Settings

router = APIRouter(
    prefix="/v1", tags=["explain"], responses=error_responses(401, 403, 404, 422, 503)
)

LiveQuery = Annotated[
    bool,
    Query(
        description="Also ask the tenant's Moodle what it shows now (user, course, enrolment): "
        "a few read-only web-service calls"
    ),
]


@router.get(
    "/explain/{entity}/{zoho_id}",
    summary="Why a record is, or is not, in Moodle: a verdict in plain words, then the facts",
    response_model=Explanation,
)
async def explain_record(
    entity: str,
    zoho_id: str,
    caller: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    live: LiveQuery = False,
) -> Response:
    """404 when the record never reached the service for the caller's tenant; 422 for an
    unknown entity."""
    tenant_id = caller.tenant_id()
    answer = await run_in_threadpool(
        lambda: explain.explain(
            db, tenant_id=tenant_id, entity=entity, zoho_id=zoho_id, settings=settings
        )
    )
    if live:
        answer = await _with_live(answer, db, tenant_id, settings)
    return json_response(answer.model_dump(mode="json"))


@router.get(
    "/explain",
    summary="Find a record by Zoho id, student number or e-mail, and explain it",
    response_model=Search,
)
async def explain_search(
    caller: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    q: Annotated[
        str, Query(description="A Zoho record id, a student number or an e-mail address")
    ] = "",
    live: LiveQuery = False,
) -> Response:
    """Every record of the tenant that `q` names (`matches`), and the explanation when exactly
    one does; 404 when none does."""
    tenant_id = caller.tenant_id()
    found = await run_in_threadpool(
        lambda: explain.search(db, tenant_id=tenant_id, query=q, settings=settings)
    )
    if live and found.explanation is not None:
        found.explanation = await _with_live(found.explanation, db, tenant_id, settings)
    return json_response(found.model_dump(mode="json"))


async def _with_live(
    answer: Explanation, db: Database, tenant_id: int, settings: Settings
) -> Explanation:
    async with httpx.AsyncClient() as http:
        return await explain.add_live(
            answer, db=db, tenant_id=tenant_id, settings=settings, http=http
        )
