"""Async client for the Moodle REST web service (Moodle 4.5), one method per function the sync uses.

Transport: every call is a POST to `{base_url}/webservice/rest/server.php` with `wstoken`,
`wsfunction` and `moodlewsrestformat=json` in the query string and the parameters form-encoded
in PHP bracket notation in the body. The query string keeps those three out of the body, where
PHP would drop them first once a body passes `max_input_vars` (5000 by default).

Errors: Moodle answers HTTP 200 even for errors, so the body decides.

* A JSON object with an `exception` key raises `MoodleRejected`, or `MoodleAccessDenied` when the
  errorcode means the token or the web-service user is wrong for every call of the tenant:
  - `invalidtoken` (wrong or empty token) and, from Moodle's web-service login code,
    `invalidtimedtoken`, `invalidiptoken` and the `wsaccessuser...` codes (WS user deleted,
    suspended, unconfirmed, nologin, expired);
  - `servicenotavailable` and `accessexception` (the function is not in the token's service);
  - `nopermissions` (the WS user lacks a system capability, e.g. moodle/user:create);
  - `requireloginerror` (the WS user lacks access in a course context; setup, not data);
  - `wsusercannotassign` (the WS role may not assign the configured role id: the role mapping
    or the role_allow_assign setup is wrong, so every enrolment with that role fails);
  - `invalidrecord` about table `external_functions` (the site does not have the function).
  Everything else (invalidparameter, shortnametaken, wsnoinstance, invaliduser, ...) concerns
  the data of one call and raises plain `MoodleRejected`.
* Network errors, timeouts, any HTTP status other than 200, XML or HTML answers and bodies that
  are not JSON raise `MoodleUnavailable`. The literal body `null` is a success.

The token never appears in an exception, a log line or a repr: messages are scrubbed, and a
filter on the `httpx`/`httpcore` loggers redacts it from their request lines (they log the URL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from zoho_moodle_sync.errors import MoodleAccessDenied, MoodleRejected, MoodleUnavailable
from zoho_moodle_sync.moodle.models import (
    Category,
    CategoryCriterion,
    CategoryUpdate,
    Course,
    CourseField,
    CoursesReply,
    CourseUpdate,
    CreatedCategory,
    CreatedCourse,
    CreatedUser,
    EnrolledUser,
    Enrolment,
    MoodleUser,
    MoodleWarning,
    NewCategory,
    NewCourse,
    NewUser,
    SiteInfo,
    Unenrolment,
    UserField,
    UserUpdate,
    WarningsReply,
)

logger = logging.getLogger("zoho_moodle_sync.moodle")

ENDPOINT_PATH: Final = "/webservice/rest/server.php"
DEFAULT_MAX_INPUT_VARS: Final = 5000
MAX_USERNAME_LENGTH: Final = 100

ACCESS_DENIED_CODES: Final = frozenset(
    {
        "invalidtoken",
        "invalidtimedtoken",
        "invalidiptoken",
        "wsaccessuserdeleted",
        "wsaccessuserunconfirmed",
        "wsaccessusersuspended",
        "wsaccessusernologin",
        "wsaccessuserexpired",
        "servicenotavailable",
        "accessexception",
        "nopermissions",
        "requireloginerror",
        "wsusercannotassign",
    }
)

_USERNAME_REJECTED = re.compile(r"[^a-z0-9_.@-]")
_MAX_MESSAGE = 500
_T = TypeVar("_T")


def encode_moodle_params(params: Mapping[str, object]) -> list[tuple[str, str]]:
    """`params` flattened to form fields in PHP bracket notation, in order.

    Lists and mappings (and Pydantic models) nest one bracket level deeper, booleans become
    `1`/`0`, and None values are left out, so an optional field that is not set is not sent.
    An empty list sends nothing: PHP form encoding has no way to say "empty array".
    """
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(str(key), value, pairs)
    return pairs


def _flatten(name: str, value: object, pairs: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{name}[{key}]", item, pairs)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _flatten(f"{name}[{index}]", item, pairs)
    else:
        pairs.append((name, _scalar(value)))


def _scalar(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    # bool before int: True is an int in Python, but Moodle wants 1/0, not "True".
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"cannot send a {type(value).__name__} to Moodle")


def moodle_username(value: str) -> str:
    """`value` lower-cased as Moodle stores usernames; ValueError if Moodle would still refuse it.

    Moodle (extendedusernamechars off) accepts only `a-z 0-9 _ - . @`, at most 100 characters.
    """
    username = value.lower()
    if not username:
        raise ValueError("a Moodle username cannot be empty")
    rejected = sorted(set(_USERNAME_REJECTED.findall(username)))
    if rejected:
        shown = ", ".join(repr(char) for char in rejected)
        raise ValueError(f"username {value!r} has characters Moodle rejects: {shown}")
    if len(username) > MAX_USERNAME_LENGTH:
        raise ValueError(f"username {value!r} is longer than {MAX_USERNAME_LENGTH} characters")
    return username


def max_items_per_call(fields_per_item: int, max_input_vars: int = DEFAULT_MAX_INPUT_VARS) -> int:
    """How many items of `fields_per_item` form fields fit in one call's body.

    With the token, function and format in the query string the body may hold `max_input_vars`
    variables; PHP silently drops the rest, which would cut the last items short.
    """
    if fields_per_item < 1:
        raise ValueError("fields_per_item must be at least 1")
    if max_input_vars < 1:
        raise ValueError("max_input_vars must be at least 1")
    if fields_per_item > max_input_vars:
        raise ValueError(
            f"one item needs {fields_per_item} form fields, more than max_input_vars "
            f"({max_input_vars}) allows in a call"
        )
    return max_input_vars // fields_per_item


class _TokenRedactor(logging.Filter):
    """Redacts registered tokens from records of loggers that print request URLs."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, token: str) -> None:
        if token:
            self._secrets.update({token, quote(token, safe="")})

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: self._redact_arg(arg) for key, arg in record.args.items()}
        return True

    def _redact_arg(self, arg: object) -> object:
        if isinstance(arg, int | float | bool) or arg is None:
            return arg
        text = str(arg)
        redacted = self.redact(text)
        return redacted if redacted != text else arg


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(shape: type[_T]) -> TypeAdapter[_T]:
    adapter = _ADAPTERS.get(shape)
    if adapter is None:
        adapter = _ADAPTERS[shape] = TypeAdapter(shape)
    return adapter


_REDACTOR = _TokenRedactor()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACTOR)


class MoodleClient:
    """The Moodle web-service functions the sync needs, over an injected `httpx.AsyncClient`.

    Method names drop the component prefix of the function they call: `create_users` calls
    core_user_create_users, `enrol_users` enrol_manual_enrol_users, `get_enrolled_users`
    core_enrol_get_enrolled_users, `assign_roles` core_role_assign_roles, and so on. Batch
    methods send nothing for an empty batch. A call whose body would pass `max_input_vars`
    raises ValueError before sending; split batches with `max_items_per_call`. `timeout` caps a
    whole call, answer included.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        http: httpx.AsyncClient,
        timeout: float = 60.0,
        max_input_vars: int = DEFAULT_MAX_INPUT_VARS,
    ) -> None:
        if not token:
            raise ValueError("the Moodle token is empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        url = httpx.URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"Moodle base URL must be http(s)://host[/path], got {base_url!r}")
        self._base_url = str(url)
        self._endpoint = self._base_url + ENDPOINT_PATH
        self._token = token
        self._http = http
        self._timeout = timeout
        self._max_input_vars = max_input_vars
        _REDACTOR.add(token)

    def __repr__(self) -> str:
        return f"MoodleClient(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    # ---- the functions ---------------------------------------------------------------------

    async def get_site_info(self) -> SiteInfo:
        """core_webservice_get_site_info: who the token is and which functions it may call."""
        data = await self.call("core_webservice_get_site_info")
        return self._parse("core_webservice_get_site_info", SiteInfo, data)

    async def create_users(self, users: Sequence[NewUser]) -> list[CreatedUser]:
        """core_user_create_users: all or nothing; ids come back in request order."""
        if not users:
            return []
        data = await self.call("core_user_create_users", {"users": users})
        return self._parse("core_user_create_users", list[CreatedUser], data)

    async def update_users(self, users: Sequence[UserUpdate]) -> list[MoodleWarning]:
        """core_user_update_users: per-user problems come back as warnings, the rest is saved."""
        if not users:
            return []
        data = await self.call("core_user_update_users", {"users": users})
        return self._parse("core_user_update_users", WarningsReply, data).warnings

    async def get_users_by_field(
        self, field: UserField, values: Sequence[str | int]
    ) -> list[MoodleUser]:
        """core_user_get_users_by_field: unknown values are left out; `email` is case-sensitive.

        idnumber is not unique in Moodle, so one value can return several users.
        """
        if not values:
            return []
        data = await self.call(
            "core_user_get_users_by_field", {"field": field, "values": list(values)}
        )
        return self._parse("core_user_get_users_by_field", list[MoodleUser], data)

    async def create_categories(self, categories: Sequence[NewCategory]) -> list[CreatedCategory]:
        """core_course_create_categories: all or nothing; names need not be unique."""
        if not categories:
            return []
        data = await self.call("core_course_create_categories", {"categories": categories})
        return self._parse("core_course_create_categories", list[CreatedCategory], data)

    async def get_categories(
        self, criteria: Sequence[CategoryCriterion] = (), *, addsubcategories: bool = False
    ) -> list[Category]:
        """core_course_get_categories: the categories matching every criterion.

        Moodle's own default adds all subcategories of the matches; this method asks for
        exactly the matches unless `addsubcategories` is set.
        """
        data = await self.call(
            "core_course_get_categories",
            {"criteria": list(criteria), "addsubcategories": addsubcategories},
        )
        return self._parse("core_course_get_categories", list[Category], data)

    async def update_categories(self, categories: Sequence[CategoryUpdate]) -> None:
        """core_course_update_categories: all or nothing."""
        if categories:
            await self.call("core_course_update_categories", {"categories": categories})

    async def create_courses(self, courses: Sequence[NewCourse]) -> list[CreatedCourse]:
        """core_course_create_courses: all or nothing; each new course gets a manual enrolment."""
        if not courses:
            return []
        data = await self.call("core_course_create_courses", {"courses": courses})
        return self._parse("core_course_create_courses", list[CreatedCourse], data)

    async def update_courses(self, courses: Sequence[CourseUpdate]) -> list[MoodleWarning]:
        """core_course_update_courses: per-course problems come back as warnings."""
        if not courses:
            return []
        data = await self.call("core_course_update_courses", {"courses": courses})
        return self._parse("core_course_update_courses", WarningsReply, data).warnings

    async def get_courses_by_field(
        self, field: CourseField | None = None, value: str | int | None = None
    ) -> list[Course]:
        """core_course_get_courses_by_field: with no field, every course (site course included)."""
        if (field is None) != (value is None):
            raise ValueError("give both field and value, or neither")
        params: dict[str, object] = {} if field is None else {"field": field, "value": value}
        data = await self.call("core_course_get_courses_by_field", params)
        return self._parse("core_course_get_courses_by_field", CoursesReply, data).courses

    async def enrol_users(self, enrolments: Sequence[Enrolment]) -> None:
        """enrol_manual_enrol_users: all or nothing.

        Enrolling an enrolled user again adds the role (it does not replace the old one) and
        sets the times and `suspend` anew, so leaving `suspend` out reactivates.
        """
        if enrolments:
            await self.call("enrol_manual_enrol_users", {"enrolments": enrolments})

    async def unenrol_users(self, unenrolments: Sequence[Unenrolment]) -> None:
        """enrol_manual_unenrol_users: all or nothing; a user who is not enrolled is no error."""
        if unenrolments:
            await self.call("enrol_manual_unenrol_users", {"enrolments": unenrolments})

    async def get_enrolled_users(
        self,
        courseid: int,
        *,
        userfields: Sequence[str] | None = None,
        onlyactive: bool = False,
        onlysuspended: bool = False,
        limitfrom: int | None = None,
        limitnumber: int | None = None,
    ) -> list[EnrolledUser]:
        """core_enrol_get_enrolled_users: active and suspended alike unless an `only...` is set."""
        if onlyactive and onlysuspended:
            raise ValueError("onlyactive and onlysuspended exclude each other")
        options: list[dict[str, str]] = []
        if userfields:
            options.append({"name": "userfields", "value": ",".join(userfields)})
        if onlyactive:
            options.append({"name": "onlyactive", "value": "1"})
        if onlysuspended:
            options.append({"name": "onlysuspended", "value": "1"})
        if limitfrom is not None:
            options.append({"name": "limitfrom", "value": str(limitfrom)})
        if limitnumber is not None:
            options.append({"name": "limitnumber", "value": str(limitnumber)})
        data = await self.call(
            "core_enrol_get_enrolled_users", {"courseid": courseid, "options": options}
        )
        return self._parse("core_enrol_get_enrolled_users", list[EnrolledUser], data)

    async def call(self, function: str, params: Mapping[str, object] | None = None) -> Any:
        """Call `function` with `params` and return the decoded JSON answer (None for `null`)."""
        pairs = encode_moodle_params(params or {})
        if len(pairs) > self._max_input_vars:
            raise ValueError(
                f"{function}: {len(pairs)} form fields, more than max_input_vars "
                f"({self._max_input_vars}); Moodle would silently drop the rest"
            )
        query = {"wstoken": self._token, "wsfunction": function, "moodlewsrestformat": "json"}
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._endpoint,
                    params=query,
                    content=urlencode(pairs).encode("utf-8"),
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Accept": "application/json",
                    },
                )
        except TimeoutError:
            raise MoodleUnavailable(f"{function}: no answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise MoodleUnavailable(f"{function}: {detail}") from None
        elapsed = time.monotonic() - started
        logger.debug(
            "moodle %s: %d form fields, HTTP %d in %.3f s",
            function,
            len(pairs),
            response.status_code,
            elapsed,
        )
        return self._decode(function, response)

    def _decode(self, function: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            # Moodle itself answers 200 even for errors: this came from PHP dying or a proxy.
            raise MoodleUnavailable(f"{function}: HTTP {response.status_code}")
        text = response.text
        content_type = response.headers.get("content-type", "").lower()
        if "xml" in content_type or "html" in content_type or text.lstrip().startswith("<"):
            raise MoodleUnavailable(
                f"{function}: answered {content_type or 'markup'} instead of JSON"
            )
        try:
            data = json.loads(text)
        except ValueError:
            raise MoodleUnavailable(f"{function}: the answer is not JSON") from None
        if isinstance(data, dict) and "exception" in data:
            raise self._rejection(function, data)
        return data

    def _rejection(self, function: str, body: Mapping[str, Any]) -> MoodleRejected:
        errorcode = self._scrub(str(body.get("errorcode") or ""))
        message = self._scrub(str(body.get("message") or ""))
        exception = self._scrub(str(body.get("exception") or ""))
        raw_debuginfo = body.get("debuginfo")
        debuginfo = self._scrub(str(raw_debuginfo)) if raw_debuginfo is not None else None
        missing_function = errorcode == "invalidrecord" and "external_functions" in message
        kind = (
            MoodleAccessDenied
            if errorcode in ACCESS_DENIED_CODES or missing_function
            else MoodleRejected
        )
        logger.info("moodle %s refused: %s (%s)", function, errorcode, exception)
        return kind(
            errorcode=errorcode,
            message=message,
            exception=exception,
            debuginfo=debuginfo,
            function=function,
        )

    def _parse(self, function: str, shape: type[_T], data: Any) -> _T:
        try:
            return _adapter(shape).validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
                for error in exc.errors()[:3]
            )
            raise MoodleUnavailable(
                self._scrub(f"{function}: unexpected answer shape: {problems}")
            ) from None

    def _scrub(self, text: str) -> str:
        text = _REDACTOR.redact(text.replace(self._token, "***"))
        return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."
