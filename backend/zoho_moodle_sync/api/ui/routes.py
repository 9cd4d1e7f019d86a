"""The operator's console at `/ui`: server-rendered pages (Jinja2, autoescaped, no
JavaScript) behind the admin credential. Every form posts with the session's CSRF token; every
action is the function the API and the CLI use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import jinja2
from fastapi import APIRouter, FastAPI, Form, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zoho_moodle_sync import explain
from zoho_moodle_sync.api.deps import DatabaseDep, SettingsDep
from zoho_moodle_sync.api.ui import session as console
from zoho_moodle_sync.api.ui import views
from zoho_moodle_sync.errors import RequestRejected, Unprocessable
from zoho_moodle_sync.explain.verdict import short

HERE = Path(__file__).parent
FLASH = "zms_console_flash"
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.filters["short"] = short
templates.env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else "-"
router = APIRouter(prefix="/ui", include_in_schema=False)
CsrfField = Annotated[str | None, Form(alias="csrf")]
TenantField = Annotated[str | None, Form(alias="tenant")]


class ConsoleHeaders:
    """Security headers on every console answer: no framing, no caching, nothing loaded from
    elsewhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(console.PATH):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (k.lower().encode(), v.encode()) for k, v in console.SECURITY_HEADERS.items()
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def install_console(app: FastAPI) -> None:
    app.add_middleware(ConsoleHeaders)
    app.include_router(router)

    @app.exception_handler(console.LoginRequired)
    async def _login(_request: Request, _exc: console.LoginRequired) -> Response:
        return RedirectResponse(f"{console.PATH}/login", status_code=303)

    @app.exception_handler(console.CsrfRefused)
    async def _csrf(request: Request, _exc: console.CsrfRefused) -> Response:
        return templates.TemplateResponse(
            request,
            "error.html",
            {
                "title": "Refused",
                "message": "The form was refused: its security token is "
                "missing or out of date. Reload the page and try again.",
            },
            status_code=403,
        )


def _render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    flash = request.cookies.get(FLASH)
    response = templates.TemplateResponse(
        request, name, {"flash": flash, **context}, status_code=status_code
    )
    if flash:
        response.delete_cookie(FLASH, path=console.PATH)
    return response


def _back(url: str, message: str) -> Response:
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLASH, message, max_age=60, path=console.PATH, httponly=True, samesite="strict"
    )
    return response


async def _page(
    request: Request,
    db: Any,
    settings: Any,
    tenant: str | None,
    name: str,
    build: Callable[[views.TenantChoice], Any],
) -> Response:
    """A page about one tenant, for a logged-in operator; a refusal (unknown tenant, job,
    record) becomes an error page."""
    session = await console.current(request, db=db, settings=settings)
    try:
        chosen = await run_in_threadpool(views.chosen, db, tenant, settings)
        context = await run_in_threadpool(build, chosen)
        choices = await run_in_threadpool(views.tenant_choices, db)
    except RequestRejected as refused:
        return _render(
            request,
            "error.html",
            {
                "title": "Not found" if refused.status_code == 404 else "Refused",
                "message": refused.message,
            },
            status_code=refused.status_code,
        )
    return _render(
        request,
        name,
        {"csrf": session.csrf, "tenant": chosen, "tenants": choices, **context},
    )


async def _act(
    request: Request,
    db: Any,
    settings: Any,
    csrf: str | None,
    tenant: str | None,
    back: str,
    act: Callable[[views.TenantChoice], str],
) -> Response:
    session = await console.current(request, db=db, settings=settings)
    console.check_csrf(session, csrf)
    try:
        chosen = await run_in_threadpool(views.chosen, db, tenant, settings)
        message = await run_in_threadpool(act, chosen)
    except RequestRejected as refused:
        message = f"Refused: {refused.message}"
    return _back(back, message)


def _url(path: str, **params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{console.PATH}{path}" + (f"?{urlencode(kept)}" if kept else "")


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return FileResponse(HERE / "static" / "console.css", media_type="text/css")


@router.get("/login")
async def login_form(request: Request, settings: SettingsDep) -> Response:
    return _login_page(request, settings, None)


def _login_page(
    request: Request, settings: Any, error: str | None, status_code: int = 200
) -> Response:
    token, signed = console.login_csrf(settings)
    page = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf": token, "error": error, "flash": None},
        status_code=status_code,
    )
    console.set_login_cookie(request, page, signed)
    return page


@router.post("/login")
async def login(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    token: Annotated[str, Form()] = "",
    csrf: CsrfField = None,
) -> Response:
    console.check_login_csrf(request, settings, csrf)
    response = RedirectResponse(f"{console.PATH}/", status_code=303)
    if await console.log_in(request, response, db=db, settings=settings, presented=token):
        return response
    return _login_page(request, settings, "That is not the admin credential.", 401)


@router.post("/logout")
async def logout(
    request: Request, db: DatabaseDep, settings: SettingsDep, csrf: CsrfField = None
) -> Response:
    session = await console.current(request, db=db, settings=settings)
    console.check_csrf(session, csrf)
    response = RedirectResponse(f"{console.PATH}/login", status_code=303)
    console.log_out(response)
    return response


@router.get("/")
async def overview(
    request: Request, db: DatabaseDep, settings: SettingsDep, tenant: str | None = None
) -> Response:
    return await _page(
        request,
        db,
        settings,
        tenant,
        "overview.html",
        lambda chosen: {"view": views.overview(db, chosen, settings)},
    )


@router.get("/jobs")
async def jobs(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: str | None = None,
    state: Annotated[str, Query()] = "dead",
) -> Response:
    return await _page(
        request,
        db,
        settings,
        tenant,
        "jobs.html",
        lambda chosen: {
            "jobs": views.jobs(db, chosen, state),
            "state": state,
            "states": views.NEEDS_A_PERSON,
        },
    )


@router.post("/jobs/{job_id}/retry")
async def retry(
    request: Request,
    job_id: int,
    db: DatabaseDep,
    settings: SettingsDep,
    csrf: CsrfField = None,
    tenant: TenantField = None,
    state: Annotated[str, Form()] = "dead",
) -> Response:
    return await _act(
        request,
        db,
        settings,
        csrf,
        tenant,
        _url("/jobs", tenant=tenant, state=state),
        lambda chosen: views.retry(db, chosen, job_id),
    )


@router.post("/jobs/retry-dead")
async def retry_dead(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    csrf: CsrfField = None,
    tenant: TenantField = None,
) -> Response:
    return await _act(
        request,
        db,
        settings,
        csrf,
        tenant,
        _url("/jobs", tenant=tenant, state="dead"),
        lambda chosen: views.retry_dead(db, chosen),
    )


@router.post("/jobs/confirm-held")
async def confirm_held(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    csrf: CsrfField = None,
    tenant: TenantField = None,
) -> Response:
    return await _act(
        request,
        db,
        settings,
        csrf,
        tenant,
        _url("/jobs", tenant=tenant, state="held"),
        lambda chosen: views.confirm_held(db, chosen),
    )


@router.get("/parked")
async def parked(
    request: Request, db: DatabaseDep, settings: SettingsDep, tenant: str | None = None
) -> Response:
    return await _page(
        request,
        db,
        settings,
        tenant,
        "parked.html",
        lambda chosen: {"parked": views.parked(db, chosen)},
    )


@router.get("/events")
async def inbound_events(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: str | None = None,
    zoho_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    def build(chosen: views.TenantChoice) -> dict[str, Any]:
        start, end = _time(since, "since"), _time(until, "until")
        found = views.inbound(
            db, chosen, zoho_id=(zoho_id or "").strip() or None, since=start, until=end
        )
        return {
            "events": found,
            "zoho_id": zoho_id or "",
            "since": since or "",
            "until": until or "",
        }

    return await _page(request, db, settings, tenant, "events.html", build)


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(
            f"{name}: not a date and time ({value!r}); use 2025-05-10T08:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.post("/events/{event_id}/replay")
async def replay(
    request: Request,
    event_id: int,
    db: DatabaseDep,
    settings: SettingsDep,
    csrf: CsrfField = None,
    tenant: TenantField = None,
) -> Response:
    return await _act(
        request,
        db,
        settings,
        csrf,
        tenant,
        _url("/events", tenant=tenant),
        lambda chosen: views.replay(db, chosen, event_id, settings),
    )


@router.get("/records/{entity}/{zoho_id}")
async def record(
    request: Request,
    entity: str,
    zoho_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: str | None = None,
    live: bool = False,
) -> Response:
    def build(chosen: views.TenantChoice) -> dict[str, Any]:
        answer = explain.explain(
            db, tenant_id=chosen.id, entity=entity, zoho_id=zoho_id, settings=settings
        )
        if live:  # in this worker thread, with an event loop of its own
            answer = asyncio.run(_with_live(answer, db, chosen.id, settings))
        return {"answer": answer}

    return await _page(request, db, settings, tenant, "record.html", build)


async def _with_live(
    answer: explain.Explanation, db: Any, tenant_id: int, settings: Any
) -> explain.Explanation:
    async with httpx.AsyncClient() as http:
        return await explain.add_live(
            answer, db=db, tenant_id=tenant_id, settings=settings, http=http
        )


@router.get("/explain")
async def search(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: str | None = None,
    q: str = "",
) -> Response:
    """A record by Zoho id, student number or e-mail: its page when one matches, else the list."""

    await console.current(request, db=db, settings=settings)

    def find(chosen: views.TenantChoice) -> explain.Search:
        return explain.search(db, tenant_id=chosen.id, query=q, settings=settings)

    try:
        chosen = await run_in_threadpool(views.chosen, db, tenant, settings)
        found = await run_in_threadpool(find, chosen)
    except RequestRejected:
        found = None
    if found is not None and len(found.matches) == 1:
        [only] = found.matches
        return RedirectResponse(
            _url(f"/records/{only.entity}/{only.zoho_id}", tenant=chosen.slug), status_code=303
        )
    return await _page(
        request, db, settings, tenant, "search.html", lambda c: {"found": find(c), "q": q}
    )
