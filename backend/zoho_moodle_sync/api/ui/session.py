"""The console's session: the admin credential exchanged once for a signed, HttpOnly,
SameSite=Strict cookie that expires (UI_SESSION_HOURS), a CSRF token bound to the session for
every form, and the security headers of every console page.

The cookie holds no secret: a random session id, the CSRF token, and the SHA-256 digest of the
credential that logged in, checked again on every request, so that revoking that secret (or
changing ADMIN_TOKEN) ends the session at once. It is signed with itsdangerous, with a key
derived from SECRET_KEY, or made at start-up when there is none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import credentials
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

COOKIE = "zms_console"
LOGIN_COOKIE = "zms_console_login"
"""Before login: the CSRF token of the login form (double submit)."""
PATH = "/ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PROCESS_KEY = secrets.token_bytes(32)


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login form."""


class CsrfRefused(Exception):
    """A form arrived without the session's CSRF token: refused with 403."""


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    csrf: str
    credential: str
    """SHA-256 of the credential that logged in."""


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    secret_key = settings.secret_key.get_secret_value()
    key = (
        hashlib.sha256(b"zoho-moodle-sync console sessions\0" + secret_key.encode()).digest()
        if secret_key
        else _PROCESS_KEY
    )
    return URLSafeTimedSerializer(key, salt=f"zms-console-{purpose}")


def _max_age(settings: Settings) -> int:
    return int(settings.ui_session_hours * 3600)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def log_in(
    request: Request, response: Response, *, db: Database, settings: Settings, presented: str
) -> bool:
    """Open a session when `presented` is the admin credential (ADMIN_TOKEN, or without one a
    secret of the default tenant); False otherwise."""
    wanted = credentials.digest(presented.strip()) if presented.strip() else ""

    def check() -> bool:
        with db.sessions() as session:
            return bool(wanted) and credentials.opens_admin(session, wanted, settings)

    if not await run_in_threadpool(check):
        return False
    value = {"sid": secrets.token_urlsafe(16), "csrf": secrets.token_urlsafe(32), "cred": wanted}
    token = _serializer(settings, "session").dumps(value)
    _set_cookie(request, response, COOKIE, token, _max_age(settings))
    response.delete_cookie(LOGIN_COOKIE, path=PATH)
    return True


def log_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH)


async def current(request: Request, *, db: Database, settings: Settings) -> ConsoleSession:
    """The request's session; LoginRequired when there is none, it expired, its signature is
    wrong, or the credential that opened it no longer opens the admin routes."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        raise LoginRequired
    try:
        value: dict[str, Any] = _serializer(settings, "session").loads(
            raw, max_age=_max_age(settings)
        )
    except (SignatureExpired, BadSignature):
        raise LoginRequired from None
    found = ConsoleSession(str(value["sid"]), str(value["csrf"]), str(value["cred"]))

    def still_valid() -> bool:
        with db.sessions() as session:
            return credentials.opens_admin(session, found.credential, settings)

    if not await run_in_threadpool(still_valid):
        raise LoginRequired
    return found


def check_csrf(session: ConsoleSession, presented: str | None) -> None:
    if not presented or not hmac.compare_digest(presented, session.csrf):
        raise CsrfRefused


def login_csrf(settings: Settings) -> tuple[str, str]:
    """A CSRF token for the login form, and its signed copy for the login cookie (there is no
    session yet to bind it to: double submit)."""
    token = secrets.token_urlsafe(32)
    return token, _serializer(settings, "login").dumps(token)


def set_login_cookie(request: Request, response: Response, signed: str) -> None:
    _set_cookie(request, response, LOGIN_COOKIE, signed, 3600)


def check_login_csrf(request: Request, settings: Settings, presented: str | None) -> None:
    raw = request.cookies.get(LOGIN_COOKIE)
    try:
        expected = _serializer(settings, "login").loads(raw or "", max_age=3600)
    except (SignatureExpired, BadSignature):
        raise CsrfRefused from None
    if not presented or not hmac.compare_digest(str(expected), presented):
        raise CsrfRefused
