"""A fake Moodle 4.5 REST web service (ASGI) that answers the way the recorded real instance did.

Use it in-process through `FakeMoodle.transport()`, or run it: `python -m tests.fakes.moodle --port
8089 --token T`. It answers at once unless given a `LatencyModel` (`--latency`), which makes every
call take about as long as on the measured real site.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

DEFAULT_TOKEN: Final = "0123456789abcdef0123456789abcdef"
DEFAULT_SITE_URL: Final = "http://127.0.0.1:8089"
ENDPOINT: Final = "/webservice/rest/server.php"
RELEASE: Final = "4.5.6 (Build: 20250811)"
VERSION: Final = "2024100706"
THEME_REVISION: Final = 1795327216
SERVICE_SHORTNAME: Final = "zoho_sync"

SITE_ID: Final = 1
GUEST_ID: Final = 1
ADMIN_ID: Final = 2
WS_USER_ID: Final = 3
NOCAP_USER_ID: Final = 4
SYSTEM_CONTEXT_ID: Final = 1

# Role ids of a fresh install plus the two the recorded site added; sortorder equals the id.
ROLES: Final[dict[int, str]] = {
    1: "manager",
    2: "coursecreator",
    3: "editingteacher",
    4: "teacher",
    5: "student",
    6: "guest",
    7: "user",
    8: "frontpage",
    9: "zohosync",
    10: "wsrestonly",
}
ROLE_CONTEXT_LEVELS: Final[dict[int, frozenset[str]]] = {
    1: frozenset({"system", "coursecat", "course"}),
    2: frozenset({"system", "coursecat"}),
    3: frozenset({"course", "module"}),
    4: frozenset({"course", "module"}),
    5: frozenset({"course", "module"}),
    6: frozenset(),
    7: frozenset(),
    8: frozenset(),
    9: frozenset({"system"}),
    10: frozenset({"system"}),
}
# role_allow_assign of the web-service user's role on the recorded site (manager worked too).
WS_ASSIGNABLE_ROLES: Final = frozenset({1, 3, 4, 5})
# Roles holding moodle/course:viewhiddencourses by default.
VIEW_HIDDEN_ROLES: Final = frozenset({1, 3, 4})
COURSE_CONTACT_ROLE: Final = 3
CONTEXT_LEVELS: Final = ("system", "user", "coursecat", "course", "module", "block")

AUTH_PLUGINS: Final = frozenset(
    {"manual", "nologin", "email", "none", "cas", "db", "ldap", "lti", "mnet", "oauth2"}
    | {"shibboleth", "webservice"}
)
CREATABLE_AUTHS: Final = AUTH_PLUGINS - {"mnet", "webservice"}
INTERNAL_AUTHS: Final = frozenset({"manual", "nologin", "email", "none", "webservice"})
LANGUAGES: Final = frozenset({"en"})
THEMES: Final = frozenset({"boost", "classic"})
TEXT_FORMATS: Final = frozenset({0, 1, 2, 4})
DAY: Final = 86400
COURSE_DURATION: Final = 365 * DAY
MAX_COURSES_IN_CATEGORY: Final = 10000

USER_FIELDS: Final = frozenset(
    {"id", "username", "fullname", "firstname", "lastname", "email", "address", "phone1"}
    | {"phone2", "department", "institution", "interests", "firstaccess", "lastaccess", "auth"}
    | {"confirmed", "idnumber", "lang", "theme", "timezone", "mailformat", "trackforums"}
    | {"description", "descriptionformat", "city", "country", "profileimageurlsmall"}
    | {"profileimageurl", "customfields", "groups", "roles", "preferences", "enrolledcourses"}
    | {"suspended", "lastcourseaccess"}
)

# Functions of a real 4.5 site; those the fake does not serve answer accessexception, as a
# function outside the token's service does.
KNOWN_FUNCTIONS: Final = frozenset(
    {
        "core_webservice_get_site_info",
        "core_user_create_users",
        "core_user_update_users",
        "core_user_get_users_by_field",
        "core_user_get_users",
        "core_user_delete_users",
        "core_course_create_categories",
        "core_course_get_categories",
        "core_course_update_categories",
        "core_course_delete_categories",
        "core_course_create_courses",
        "core_course_update_courses",
        "core_course_get_courses_by_field",
        "core_course_get_courses",
        "core_course_delete_courses",
        "core_course_search_courses",
        "core_course_get_contents",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
        "core_enrol_get_enrolled_users",
        "core_enrol_get_users_courses",
        "core_enrol_get_course_enrolment_methods",
        "core_group_create_groups",
        "core_group_get_course_groups",
        "core_group_add_group_members",
        "core_group_delete_group_members",
        "core_group_get_group_members",
        "core_group_delete_groups",
        "core_group_update_groups",
        "core_cohort_create_cohorts",
        "core_cohort_add_cohort_members",
        "core_cohort_delete_cohort_members",
        "core_cohort_get_cohorts",
        "core_cohort_search_cohorts",
        "core_cohort_get_cohort_members",
        "core_cohort_update_cohorts",
        "core_cohort_delete_cohorts",
        "core_role_assign_roles",
        "core_role_unassign_roles",
        "gradereport_user_get_grade_items",
        "gradereport_user_get_grades_table",
        "core_grades_get_gradeitems",
        "core_grades_update_grades",
        "core_completion_get_course_completion_status",
    }
)
_SETTING_KEYS: Final = (
    "moodlewssettingfilter",
    "moodlewssettingfileurl",
    "moodlewssettingraw",
    "moodlewssettinglang",
    "moodlewssettingtimezone",
)
_ACCESS_DEBUGINFO: Final = (
    "Access to the function {name}() is not allowed.\n"
    "                     There could be multiple reasons for this:\n"
    "                     1. The service linked to the user token does not contain the function.\n"
    "                     2. The service is user-restricted and the user is not listed.\n"
    "                     3. The service is IP-restricted and the user IP is not listed.\n"
    "                     4. The service is time-restricted and the time has expired.\n"
    "                     5. The token is time-restricted and the time has expired.\n"
    "                     6. The service requires a specific capability which the user does not"
    " have.\n"
    "                     7. The function is called with username/password (no user token is"
    " sent)\n"
    "                     and none of the services has the function to allow the user.\n"
    "                     These settings can be found in Administration > Site administration\n"
    "                     > Server > Web services > External services and Manage tokens."
)
_FILTERS: Final = tuple(
    {"filter": name, "localstate": 0, "inheritedstate": 1}
    for name in (
        "displayh5p",
        "activitynames",
        "mathjaxloader",
        "emoticon",
        "urltolink",
        "mediaplugin",
    )
)
_ADVANCED_FEATURES: Final = (
    ("usecomments", 1),
    ("usetags", 1),
    ("enablenotes", 1),
    ("messaging", 1),
    ("enableblogs", 1),
    ("enablecompletion", 1),
    ("enablebadges", 1),
    ("messagingallusers", 0),
    ("enablecustomreports", 1),
    ("enableglobalsearch", 0),
    ("mnet_dispatcher_mode", 0),
    ("enablecompetencies", 1),
)

Clock = Callable[[], int]
Php = Any  # a PHP value as Moodle sees it: str, int, bool, None, or a dict for a PHP array


def wall_clock() -> int:
    return int(time.time())


# ---- errors --------------------------------------------------------------------------------


class MoodleError(Exception):
    """A Moodle exception, answered as HTTP 200 with an exception body."""

    def __init__(
        self, exception: str, errorcode: str, message: str, debuginfo: str | None = None
    ) -> None:
        super().__init__(f"{errorcode}: {message}")
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo


def invalid_parameter(debuginfo: str) -> MoodleError:
    return MoodleError(
        "core\\exception\\invalid_parameter_exception",
        "invalidparameter",
        "Invalid parameter value detected",
        debuginfo,
    )


def invalid_response(debuginfo: str) -> MoodleError:
    return MoodleError(
        "core\\exception\\invalid_response_exception",
        "invalidresponse",
        "Invalid response value detected",
        debuginfo,
    )


def moodle_exception(errorcode: str, message: str, debuginfo: str | None = None) -> MoodleError:
    return MoodleError("core\\exception\\moodle_exception", errorcode, message, debuginfo)


def coding_error(hint: str, debuginfo: str | None = None) -> MoodleError:
    return MoodleError(
        "core\\exception\\coding_exception",
        "codingerror",
        f"Coding error detected, it must be fixed by a programmer: {hint}",
        debuginfo,
    )


def missing_record(table: str, sql: str, params: Sequence[object]) -> MoodleError:
    errorcode = "invaliduser" if table == "user" else "invalidrecord"
    message = (
        "Invalid user" if table == "user" else f"Can't find data record in database table {table}."
    )
    return MoodleError(
        "dml_missing_record_exception", errorcode, message, f"{sql}\n[{var_export(params)}]"
    )


def no_permission(capability_name: str) -> MoodleError:
    return MoodleError(
        "core\\exception\\required_capability_exception",
        "nopermissions",
        f"Sorry, but you do not currently have permissions to do that ({capability_name}).",
    )


def require_login() -> MoodleError:
    return MoodleError(
        "core\\exception\\require_login_exception",
        "requireloginerror",
        "Course or activity not accessible.",
    )


def invalid_param_named(name: str) -> MoodleError:
    return moodle_exception("errorinvalidparam", f'The param "{name}" is invalid.')


def var_export(values: Sequence[object]) -> str:
    """PHP's var_export of a list, as it appears in dml debuginfo."""
    lines = "".join(f"  {index} => {value},\n" for index, value in enumerate(values))
    return f"array (\n{lines})"


# ---- PHP input and output ------------------------------------------------------------------


def parse_php_form(raw: str, keep: int) -> tuple[dict[str, Php], int, int]:
    """PHP's reading of a query string or form body: (variables, how many sent, how many dropped).

    Variables past the first `keep` are dropped. PHP keeps `max_input_vars` variables of a query
    string but `max_input_vars + 1` of a POST body (it counts after registering one), which is why
    1000 users of 5 fields plus 3 control fields fail on `lastname`, not `firstname`.
    """
    segments = raw.split("&") if raw else []
    if segments and segments[-1] == "":
        segments.pop()
    variables: dict[str, Php] = {}
    for segment in segments[:keep]:
        name, _, value = segment.partition("=")
        _register(variables, unquote_plus(name), unquote_plus(value))
    return variables, len(segments), max(0, len(segments) - keep)


def _register(variables: dict[str, Php], name: str, value: str) -> None:
    name = name.lstrip(" ")
    match = re.match(r"([^\[]*)((?:\[[^\]]*\])*)", name)
    assert match is not None
    base = match.group(1).replace(" ", "_").replace(".", "_")
    if not base:
        return
    path = [base, *re.findall(r"\[([^\]]*)\]", match.group(2))]
    container = variables
    for depth, key in enumerate(path):
        if key == "":
            key = str(_next_index(container))
        if depth == len(path) - 1:
            container[key] = value
            return
        child = container.get(key)
        if not isinstance(child, dict):
            child = {}
            container[key] = child
        container = child


def _next_index(array: Mapping[str, Php]) -> int:
    numbers = [int(key) for key in array if re.fullmatch(r"-?(0|[1-9][0-9]*)", key)]
    return max(numbers) + 1 if numbers else 0


def php_json(value: Any) -> str:
    """json_encode with PHP's defaults: slashes and non-ASCII escaped."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def _html_special_chars(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def error_xml(error: MoodleError, debug: bool) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8" ?>',
        f'<EXCEPTION class="{error.exception}">',
        f"<ERRORCODE>{_html_special_chars(error.errorcode)}</ERRORCODE>",
        f"<MESSAGE>{_html_special_chars(error.message)}</MESSAGE>",
    ]
    if debug and error.debuginfo is not None:
        lines.append(f"<DEBUGINFO>{_html_special_chars(error.debuginfo)}</DEBUGINFO>")
    lines.append("</EXCEPTION>")
    return "\n".join(lines) + "\n"


def result_xml(value: Any) -> str:
    inner = "" if value is None else _xmlize(value)
    return f'<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n{inner}</RESPONSE>\n'


def _xmlize(value: Any) -> str:
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{key}">{_xmlize(item)}</KEY>\n' for key, item in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list | tuple):
        return "<MULTIPLE>\n" + "".join(_xmlize(item) for item in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{_html_special_chars(str(value))}</VALUE>\n"


def php_string(value: Php) -> str:
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    return str(value)


def php_intval(value: Php) -> int:
    if isinstance(value, bool | int):
        return int(value)
    match = re.match(r"\s*([+-]?[0-9]+)", str(value))
    return int(match.group(1)) if match else 0


def _php_loose_differs(value: str, cleaned: Php) -> bool:
    """PHP 8's `$value != $cleaned` for a request string and its cleaned form."""
    if isinstance(cleaned, int) and re.fullmatch(
        r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", value
    ):
        return float(value) != cleaned
    return value != php_string(cleaned)


def strip_tags(text: str) -> str:
    return re.sub(r"<[A-Za-z/!?][^>]*(>|$)", "", text)


def format_string(text: str) -> str:
    """How Moodle escapes a name on output (format_string with formatstringstriptags on)."""
    text = re.sub(r"&(?![a-zA-Z0-9#]{1,8};)", "&amp;", text)
    return strip_tags(text).replace("<", "&lt;").replace(">", "&gt;")


def php_trim(text: str) -> str:
    return text.strip(" \t\n\r\0\x0b")


def clean_username(value: str) -> str:
    username = php_trim(value).lower().replace(" ", "")
    return re.sub(r"[^-.@_a-z0-9]", "", username)


_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def validate_email(address: str) -> bool:
    """Moodle's validate_email (PHPMailer's html5 pattern, no angle brackets)."""
    return bool(address) and _EMAIL.fullmatch(address) is not None


def password_policy_errors(password: str) -> str:
    """The HTML Moodle's default password policy reports for `password`, empty when it passes."""
    errors = []
    if len(password) < 8:
        errors.append("Passwords must be at least 8 characters long.")
    if len(re.findall(r"[0-9]", password)) < 1:
        errors.append("Passwords must have at least 1 digit(s).")
    if len(re.findall(r"[a-z]", password)) < 1:
        errors.append("Passwords must have at least 1 lower case letter(s).")
    if len(re.findall(r"[A-Z]", password)) < 1:
        errors.append("Passwords must have at least 1 upper case letter(s).")
    if len(re.findall(r"[^a-zA-Z0-9]", password)) < 1:
        errors.append("The password must have at least 1 special character(s) such as *, -, or #.")
    return "".join(f"<div>{error}</div>" for error in errors)


def password_error(errors: str) -> MoodleError:
    # moodle_exception($errmsg): the policy text becomes the errorcode, the message "error/...".
    return moodle_exception(errors, f"error/{errors}")


def _hash_password(password: str) -> str:
    return hashlib.sha256(f"fake-moodle:{password}".encode()).hexdigest()


def like_pattern(pattern: str) -> re.Pattern[str]:
    """A case-insensitive SQL LIKE pattern (`%`, `_`, `\\` escapes) as a regex."""
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


# ---- parameter descriptions (core_external's validate_parameters) -------------------------

Requirement = Literal["required", "optional", "default"]


@dataclass(frozen=True)
class Value:
    type: str
    required: Requirement = "required"
    default: Php = None


@dataclass(frozen=True)
class Single:
    keys: tuple[tuple[str, Desc], ...]
    required: Requirement = "required"
    default: Php = None


@dataclass(frozen=True)
class Multiple:
    content: Desc
    required: Requirement = "required"
    default: Php = None


Desc = Value | Single | Multiple


def req(kind: str) -> Value:
    return Value(kind)


def opt(kind: str) -> Value:
    return Value(kind, "optional")


def dflt(kind: str, default: Php) -> Value:
    return Value(kind, "default", default)


def single(**keys: Desc) -> Single:
    return Single(tuple(keys.items()))


def many(content: Desc, required: Requirement = "required", default: Php = None) -> Multiple:
    return Multiple(content, required, default)


def validate(desc: Desc, value: Php) -> Php:
    """The parameters cleaned as Moodle does, or invalidparameter with Moodle's debuginfo."""
    if isinstance(desc, Value):
        if isinstance(value, dict | list):
            raise invalid_parameter("Scalar type expected, array or object received.")
        if desc.type == "bool" and value in (True, False, 0, 1, "0", "1"):
            return bool(int(value))
        debuginfo = (
            f'Invalid external api parameter: the value is "{php_string(value)}", '
            f'the server was expecting "{desc.type}" type'
        )
        if value is None:
            raise invalid_parameter(debuginfo)
        cleaned = clean_param(value, desc.type)
        if php_string(value) != php_string(cleaned):
            raise invalid_parameter(debuginfo)
        return cleaned
    if not isinstance(value, dict | list):
        raise invalid_parameter(f"Only arrays accepted. The bad value is: '{php_string(value)}'")
    if isinstance(desc, Multiple):
        items = value.values() if isinstance(value, dict) else value
        return [validate(desc.content, item) for item in items]
    remaining = dict(value) if isinstance(value, dict) else dict(enumerate(value))
    result: dict[str, Php] = {}
    for key, sub in desc.keys:
        if key not in remaining:
            if sub.required == "required":
                raise invalid_parameter(f"Missing required key in single structure: {key}")
            if sub.required == "optional":
                continue
            given = sub.default
        else:
            given = remaining.pop(key)
        try:
            result[key] = validate(sub, given)
        except MoodleError as error:
            if error.errorcode != "invalidparameter":
                raise
            raise invalid_parameter(f"{key} => {error.message}: {error.debuginfo}") from None
    if remaining:
        names = ", ".join(str(key) for key in remaining)
        raise invalid_parameter(f"Unexpected keys ({names}) detected in parameter array.")
    return result


def clean_param(value: Php, kind: str) -> Php:
    if kind == "int":
        return php_intval(value)
    if kind == "bool":
        text = php_string(value).lower()
        if text in ("on", "yes", "true"):
            return 1
        if text in ("off", "no", "false"):
            return 0
        return 0 if text in ("", "0") else 1
    text = php_string(value)
    if kind == "raw":
        return text
    if kind == "raw_trimmed":
        return php_trim(text)
    if kind in ("notags", "text"):
        return strip_tags(text)
    if kind == "username":
        return clean_username(text)
    if kind == "alpha":
        return re.sub(r"[^a-zA-Z]", "", text)
    if kind == "alphanum":
        return re.sub(r"[^a-zA-Z0-9]", "", text)
    if kind in ("alphanumext", "safedir"):
        return re.sub(r"[^a-zA-Z0-9_-]", "", text)
    if kind == "sequence":
        return re.sub(r"[^0-9,]", "", text)
    if kind == "plugin":
        return text if re.fullmatch(r"[a-z](?:[a-z0-9_](?!__))*[a-z0-9]+", text) else ""
    if kind == "auth":
        plugin = clean_param(text, "plugin")
        return plugin if plugin in AUTH_PLUGINS else ""
    if kind == "theme":
        plugin = clean_param(text, "plugin")
        return plugin if plugin in THEMES else ""
    if kind == "lang":
        lang = clean_param(text, "safedir")
        return lang if lang in LANGUAGES else ""
    if kind == "timezone":
        pattern = (
            r"(([+-]?(0?[0-9](\.[5|0])?|1[0-3](\.0)?|1[0-2]\.5))|(99)"
            r"|[a-zA-Z0-9]+(/?[a-zA-Z_-])+)"
        )
        return text if re.fullmatch(pattern, text) else ""
    raise ValueError(f"no cleaning rule for PARAM type {kind!r}")


_CUSTOM = many(single(type=req("alphanumext"), value=req("raw")), "optional")
_PREFERENCES = many(single(type=req("raw"), value=req("raw")), "optional")
_FORMAT_OPTIONS = many(single(name=req("alphanumext"), value=req("raw")), "optional")
_COURSE_CUSTOM = many(single(shortname=req("alphanumext"), value=req("raw")), "optional")

PARAMS: Final[dict[str, Single]] = {
    "core_webservice_get_site_info": single(
        serviceshortnames=many(req("alphanumext"), "default", [])
    ),
    "core_user_create_users": single(
        users=many(
            single(
                createpassword=opt("bool"),
                username=req("username"),
                auth=dflt("auth", "manual"),
                password=opt("raw"),
                firstname=req("notags"),
                lastname=req("notags"),
                email=req("raw_trimmed"),
                maildisplay=opt("int"),
                city=opt("text"),
                country=opt("alpha"),
                timezone=opt("timezone"),
                description=opt("raw"),
                firstnamephonetic=opt("notags"),
                lastnamephonetic=opt("notags"),
                middlename=opt("notags"),
                alternatename=opt("notags"),
                interests=opt("text"),
                idnumber=dflt("raw", ""),
                institution=opt("text"),
                department=opt("text"),
                phone1=opt("notags"),
                phone2=opt("notags"),
                address=opt("text"),
                lang=dflt("lang", "en"),
                calendartype=dflt("plugin", "gregorian"),
                theme=opt("theme"),
                mailformat=opt("int"),
                customfields=_CUSTOM,
                preferences=_PREFERENCES,
            )
        )
    ),
    "core_user_update_users": single(
        users=many(
            single(
                id=req("int"),
                username=opt("username"),
                auth=opt("auth"),
                suspended=opt("bool"),
                password=opt("raw"),
                firstname=opt("notags"),
                lastname=opt("notags"),
                email=opt("raw_trimmed"),
                maildisplay=opt("int"),
                city=opt("text"),
                country=opt("alpha"),
                timezone=opt("timezone"),
                description=opt("raw"),
                userpicture=opt("int"),
                firstnamephonetic=opt("notags"),
                lastnamephonetic=opt("notags"),
                middlename=opt("notags"),
                alternatename=opt("notags"),
                interests=opt("text"),
                idnumber=opt("raw"),
                institution=opt("text"),
                department=opt("text"),
                phone1=opt("notags"),
                phone2=opt("notags"),
                address=opt("text"),
                lang=opt("lang"),
                calendartype=opt("plugin"),
                theme=opt("theme"),
                mailformat=opt("int"),
                customfields=_CUSTOM,
                preferences=_PREFERENCES,
            )
        )
    ),
    "core_user_get_users_by_field": single(field=req("alpha"), values=many(req("raw"))),
    "core_user_get_users": single(criteria=many(single(key=req("alpha"), value=req("raw")))),
    "core_user_delete_users": single(userids=many(req("int"))),
    "core_course_create_categories": single(
        categories=many(
            single(
                name=req("text"),
                parent=dflt("int", 0),
                idnumber=opt("raw"),
                description=opt("raw"),
                descriptionformat=dflt("int", 1),
                theme=opt("theme"),
            )
        )
    ),
    "core_course_get_categories": single(
        criteria=many(single(key=req("alpha"), value=req("raw")), "default", []),
        addsubcategories=dflt("bool", 1),
    ),
    "core_course_update_categories": single(
        categories=many(
            single(
                id=req("int"),
                name=opt("text"),
                idnumber=opt("raw"),
                parent=opt("int"),
                description=opt("raw"),
                descriptionformat=dflt("int", 1),
                theme=opt("theme"),
            )
        )
    ),
    "core_course_create_courses": single(
        courses=many(
            single(
                fullname=req("text"),
                shortname=req("text"),
                categoryid=req("int"),
                idnumber=opt("raw"),
                summary=opt("raw"),
                summaryformat=dflt("int", 1),
                format=dflt("plugin", "topics"),
                showgrades=dflt("int", 1),
                newsitems=dflt("int", 5),
                startdate=opt("int"),
                enddate=opt("int"),
                numsections=opt("int"),
                maxbytes=dflt("int", 0),
                showreports=dflt("int", 0),
                visible=opt("int"),
                hiddensections=opt("int"),
                groupmode=dflt("int", 0),
                groupmodeforce=dflt("int", 0),
                defaultgroupingid=dflt("int", 0),
                enablecompletion=opt("int"),
                completionnotify=opt("int"),
                lang=opt("safedir"),
                forcetheme=opt("plugin"),
                courseformatoptions=_FORMAT_OPTIONS,
                customfields=_COURSE_CUSTOM,
            )
        )
    ),
    "core_course_update_courses": single(
        courses=many(
            single(
                id=req("int"),
                fullname=opt("text"),
                shortname=opt("text"),
                categoryid=opt("int"),
                idnumber=opt("raw"),
                summary=opt("raw"),
                summaryformat=opt("int"),
                format=opt("plugin"),
                showgrades=opt("int"),
                newsitems=opt("int"),
                startdate=opt("int"),
                enddate=opt("int"),
                numsections=opt("int"),
                maxbytes=opt("int"),
                showreports=opt("int"),
                visible=opt("int"),
                hiddensections=opt("int"),
                groupmode=opt("int"),
                groupmodeforce=opt("int"),
                defaultgroupingid=opt("int"),
                enablecompletion=opt("int"),
                completionnotify=opt("int"),
                lang=opt("safedir"),
                forcetheme=opt("plugin"),
                courseformatoptions=_FORMAT_OPTIONS,
                customfields=_COURSE_CUSTOM,
            )
        )
    ),
    "core_course_get_courses_by_field": single(field=dflt("alpha", ""), value=dflt("raw", "")),
    "core_course_delete_courses": single(courseids=many(req("int"))),
    "enrol_manual_enrol_users": single(
        enrolments=many(
            single(
                roleid=req("int"),
                userid=req("int"),
                courseid=req("int"),
                timestart=opt("int"),
                timeend=opt("int"),
                suspend=opt("int"),
            )
        )
    ),
    "enrol_manual_unenrol_users": single(
        enrolments=many(single(userid=req("int"), courseid=req("int"), roleid=opt("int")))
    ),
    "core_enrol_get_enrolled_users": single(
        courseid=req("int"),
        options=many(single(name=req("alphanumext"), value=req("raw")), "default", []),
    ),
    "core_role_assign_roles": single(
        assignments=many(
            single(
                roleid=req("int"),
                userid=req("int"),
                contextid=opt("int"),
                contextlevel=opt("alpha"),
                instanceid=opt("int"),
            )
        )
    ),
}
# Which list parameter holds a call's items, for the call log.
BATCH_KEYS: Final[dict[str, str]] = {
    "core_user_create_users": "users",
    "core_user_update_users": "users",
    "core_user_get_users_by_field": "values",
    "core_user_get_users": "criteria",
    "core_user_delete_users": "userids",
    "core_course_create_categories": "categories",
    "core_course_update_categories": "categories",
    "core_course_get_categories": "criteria",
    "core_course_create_courses": "courses",
    "core_course_update_courses": "courses",
    "core_course_delete_courses": "courseids",
    "enrol_manual_enrol_users": "enrolments",
    "enrol_manual_unenrol_users": "enrolments",
    "core_role_assign_roles": "assignments",
}
# Functions that run in one database transaction: any exception undoes the whole call.
TRANSACTIONAL: Final = frozenset(
    {
        "core_user_create_users",
        "core_user_delete_users",
        "core_course_create_categories",
        "core_course_update_categories",
        "core_course_create_courses",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
        "core_role_assign_roles",
    }
)
# The recorded service's functions that this fake serves, in the order site info lists them.
SERVED_FUNCTIONS: Final = tuple(name for name in PARAMS)


# ---- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeUser:
    id: int
    username: str
    firstname: str
    lastname: str
    email: str
    idnumber: str = ""
    auth: str = "manual"
    suspended: bool = False
    deleted: bool = False
    confirmed: bool = True
    lang: str = "en"
    calendartype: str = "gregorian"
    theme: str = ""
    timezone: str = "99"
    mailformat: int = 1
    maildisplay: int = 2
    city: str = ""
    country: str = ""
    description: str | None = None
    descriptionformat: int = 1
    department: str = ""
    institution: str = ""
    interests: str = ""
    phone1: str = ""
    phone2: str = ""
    address: str = ""
    firstnamephonetic: str = ""
    lastnamephonetic: str = ""
    middlename: str = ""
    alternatename: str = ""
    password_hash: str = field(default="", repr=False)
    preferences: Mapping[str, str] = field(default_factory=dict)
    customfields: Mapping[str, str] = field(default_factory=dict)
    timecreated: int = 0
    timemodified: int = 0
    contextid: int = 0

    @property
    def fullname(self) -> str:
        return f"{self.firstname} {self.lastname}"


@dataclass(frozen=True)
class FakeCategory:
    id: int
    name: str
    parent: int = 0
    idnumber: str = ""
    description: str = ""
    descriptionformat: int = 1
    visible: bool = True
    theme: str = ""
    timemodified: int = 0
    contextid: int = 0
    position: int = 0


@dataclass(frozen=True)
class FakeCourse:
    id: int
    fullname: str
    shortname: str
    categoryid: int
    idnumber: str = ""
    summary: str = ""
    summaryformat: int = 1
    format: str = "topics"
    showgrades: int = 1
    newsitems: int = 5
    startdate: int = 0
    enddate: int = 0
    maxbytes: int = 0
    showreports: int = 0
    visible: int = 1
    groupmode: int = 0
    groupmodeforce: int = 0
    defaultgroupingid: int = 0
    enablecompletion: int = 1
    completionnotify: int = 0
    lang: str = ""
    theme: str = ""
    hiddensections: int = 1
    coursedisplay: int = 0
    manual_enrolment: bool = True
    timecreated: int = 0
    timemodified: int = 0
    cacherev: int = 0
    contextid: int = 0
    position: int = 0


@dataclass(frozen=True)
class _Enrolment:
    userid: int
    courseid: int
    suspended: bool = False
    timestart: int = 0
    timeend: int = 0
    timecreated: int = 0
    timemodified: int = 0


@dataclass(frozen=True)
class FakeEnrolment:
    """A manual enrolment with the user's roles in the course, sorted like Moodle sorts them."""

    userid: int
    courseid: int
    roles: tuple[int, ...]
    suspended: bool
    timestart: int
    timeend: int


@dataclass(frozen=True)
class FakeCall:
    """One request to the web-service endpoint, as the fake saw it."""

    method: str
    function: str | None
    items: int
    post_vars: int
    query_vars: int
    dropped_vars: int
    outcome: str
    format: str


@dataclass(frozen=True)
class Fault:
    """Something that goes wrong around Moodle's answer: an HTTP error, a cut line, a delay.

    With `applied`, Moodle still does the work and only the answer is lost, as when a proxy
    times out on a slow but successful call; the caller cannot tell whether it happened.
    """

    kind: Literal["status", "drop", "delay"]
    status: int = 503
    seconds: float = 0.0
    applied: bool = False


@dataclass(frozen=True)
class _Token:
    userid: int
    functions: frozenset[str] | None
    capable: bool
    lacking: frozenset[str] = frozenset()
    """Capabilities the token's user lacks although `capable` (a role missing one)."""


@dataclass
class _Tables:
    users: dict[int, FakeUser] = field(default_factory=dict)
    categories: dict[int, FakeCategory] = field(default_factory=dict)
    courses: dict[int, FakeCourse] = field(default_factory=dict)
    enrolments: dict[tuple[int, int], _Enrolment] = field(default_factory=dict)
    # (userid, contextid, roleid)
    role_assignments: set[tuple[int, int, int]] = field(default_factory=set)
    # contextid -> (level, instanceid)
    contexts: dict[int, tuple[str, int]] = field(default_factory=dict)

    def copy(self) -> _Tables:
        return _Tables(
            dict(self.users),
            dict(self.categories),
            dict(self.courses),
            dict(self.enrolments),
            set(self.role_assignments),
            dict(self.contexts),
        )


@dataclass(frozen=True)
class FakeAnswer:
    """The HTTP answer to one request, and how the call log recorded it."""

    status: int
    body: str
    content_type: str
    call: FakeCall
    results: int = 0
    """Records in a successful answer (users, courses, categories found), for the latency model."""


# ---- what calls cost a real Moodle -----------------------------------------------------------

PHP_WORKERS: Final = 4
"""PHP workers of the measured site (`PHP_CLI_SERVER_WORKERS=4`): calls beyond that wait."""
CALL_SECONDS: Final = 0.030
"""Every call, before any work: the 80 refused calls of tests/data/moodle-observations.json (bad
token, unknown function, bad parameters) took 0.020-0.035 s, median 0.0315 s."""
SERIAL_SHARE: Final = 0.21
"""Share of a call's time that no other call can overlap, for functions whose parallel speed-up
was not measured: the enrolments' figure (they are database writes, not password hashing)."""


@dataclass(frozen=True)
class CallCost:
    """What one call of a function costs on top of `CALL_SECONDS`, in seconds."""

    per_item: float = 0.0
    """For each item sent (users to create, enrolments...)."""
    per_result: float = 0.0
    """For each record answered (a lookup that finds nothing costs only the call)."""
    serial_share: float = SERIAL_SHARE
    """Share of the call's time that parallel calls cannot overlap, spent on what all PHP
    workers share (the site's 2 cores, its database) and so taken in turn. Fitted as
    `2 * T2 / T1 - 1`, where T1 is the time of a series of calls made one after the other and
    T2 the time of the same calls from two clients at once."""


MOODLE_COSTS: Final[Mapping[str, CallCost]] = {
    # 10 calls x 100 users: 10.2 s (1.02 s a call); 500 users in one call: 4.98 s. Two clients:
    # 8.9 s, so 2 * 8.9 / 10.2 - 1 = 0.75 of it is serial (password hashing takes the CPU).
    "core_user_create_users": CallCost(per_item=0.0099, serial_share=0.75),
    # 10 calls x 100 enrolments: 6.6 s (0.57-0.82 s a call). Two clients: 4.0 s: 0.21 serial.
    "enrol_manual_enrol_users": CallCost(per_item=0.0063, serial_share=0.21),
    # core_user_get_users answered 500 users in 2.30 s and 999 in 3.37 s: 3.4-4.6 ms a user;
    # a lookup by field took 0.025-0.028 s finding nothing, 0.037-0.044 s finding one user.
    "core_user_get_users_by_field": CallCost(per_result=0.004),
    "core_user_get_users": CallCost(per_result=0.004),
    # 1,000 enrolled users (userfields=id,username,idnumber) in 0.57 s.
    "core_enrol_get_enrolled_users": CallCost(per_result=0.00054),
    # One course found: 0.042-0.058 s, two: 0.062 s, none: 0.026 s.
    "core_course_get_courses_by_field": CallCost(per_result=0.018),
    # One category found: 0.027 s, none: 0.022 s.
    "core_course_get_categories": CallCost(per_result=0.005),
    # One category created: 0.036-0.051 s.
    "core_course_create_categories": CallCost(per_item=0.010),
    "core_course_update_categories": CallCost(per_item=0.010),
    # One course created: 0.052 s, two in one call: 0.100 s.
    "core_course_create_courses": CallCost(per_item=0.035),
    # One course updated: 0.048 s.
    "core_course_update_courses": CallCost(per_item=0.018),
    # One user updated: 0.036-0.042 s.
    "core_user_update_users": CallCost(per_item=0.009),
    # One user deleted: 0.098 s; one (empty) course deleted: 0.392 s.
    "core_user_delete_users": CallCost(per_item=0.068),
    "core_course_delete_courses": CallCost(per_item=0.36),
    # One enrolment removed: 0.032-0.044 s; one role assigned: 0.033 s.
    "enrol_manual_unenrol_users": CallCost(per_item=0.010),
    "core_role_assign_roles": CallCost(per_item=0.003),
}
"""Per-function costs on the recorded site (Moodle 4.5.6, PHP 8.2, PostgreSQL 15, 2 cores,
loopback, opcache on): timed runs of users, enrolments and enrolled users, and the durations in
tests/data/moodle-observations.json for the rest, as the comments above give them. A lookup
costs by the records it finds, not the values it asks for. Functions not listed cost
`OTHER_CALL`: site info and other small reads cost only the call."""
OTHER_CALL: Final = CallCost()


@dataclass(frozen=True)
class LatencyModel:
    """How long a real Moodle 4.5 takes to answer, for benchmarks that must predict real time.

    A call takes `CALL_SECONDS` plus its function's `MOODLE_COSTS` for the items it sends and
    the records it answers; a refused call (an exception answer) costs `CALL_SECONDS` only, as
    the recorded refusals did whatever their size. At most `workers` calls are served at once,
    the others wait for a free worker, and the `serial_share` of each call's time is spent
    holding a resource all workers share, so parallel calls overlap only as much as they did on
    the measured site. `scale` multiplies every time (0.1 for a quick run ten times faster).

    The fake's own processing counts towards the modelled time, and a call's effect is visible
    to other calls from the start of its time rather than at its end.
    """

    workers: int = PHP_WORKERS
    scale: float = 1.0
    per_call: float = CALL_SECONDS
    costs: Mapping[str, CallCost] = field(default_factory=lambda: dict(MOODLE_COSTS))

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a Moodle site has at least one PHP worker")
        if self.scale < 0:
            raise ValueError("latency scale cannot be negative")

    def seconds(self, answer: FakeAnswer) -> tuple[float, float]:
        """The time `answer` takes: (the part parallel calls may overlap, the serial part)."""
        call = answer.call
        cost = self.costs.get(call.function or "", OTHER_CALL)
        total = self.per_call
        if call.outcome == "ok":
            total += call.items * cost.per_item + answer.results * cost.per_result
        total *= self.scale
        serial = total * cost.serial_share
        return total - serial, serial


Handler = Callable[["FakeMoodle", dict[str, Php], _Token], Any]


class FakeMoodle:
    """In-memory Moodle 4.5 web service for tests, faithful to the recorded instance.

    It serves the functions the sync calls plus core_user_delete_users, core_user_get_users and
    core_course_delete_courses; other real functions answer `accessexception` as if outside the
    token's service, unknown ones `invalidrecord`. Errors are HTTP 200 exception bodies with the
    recorded classes, codes and messages (debuginfo only with `debug` on); parameters are
    validated like core_external (missing or unexpected keys, PARAM types); functions that throw
    are all-or-nothing, while ids consumed by a rolled-back call stay used, as PostgreSQL
    sequences do. A body past `max_input_vars` loses its trailing variables, as PHP drops them.

    The site starts with users 1 guest, 2 admin (site admin), 3 wsuser (the token's user) and
    4 wsnocap, category 1 and the site course 1; role ids are Moodle's defaults. The main token
    belongs to user 3 with every capability. `add_token(..., capable=False)` gives a token
    without capabilities: system-level writes then answer `nopermissions`, course-level calls
    `requireloginerror`, and reads return what a user without capabilities could see.
    With a `latency` model, each web-service call takes the time a real site would take.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        site_url: str = DEFAULT_SITE_URL,
        site_name: str = "Moodle Test",
        clock: Clock = wall_clock,
        max_input_vars: int = 5000,
        debug: bool = False,
        latency: LatencyModel | None = None,
    ) -> None:
        self.site_url = site_url.rstrip("/")
        self.site_name = site_name
        self.clock = clock
        self.max_input_vars = max_input_vars
        self.debug = debug
        self.latency = latency
        self._gates: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore, asyncio.Lock] | None = None
        self.calls: list[FakeCall] = []
        self._lock = threading.RLock()
        self._tables = _Tables()
        self._sequences = {"user": 1, "category": 1, "course": 1, "context": 2, "position": 1}
        self._tokens: dict[str, _Token] = {}
        self._queued_faults: list[Fault] = []
        self._standing_faults: list[Fault] = []
        self._tables.contexts[SYSTEM_CONTEXT_ID] = ("system", 0)
        self._seed_site()
        self.add_token(token)
        self.token = token

    # ---- setting up ------------------------------------------------------------------------

    def _seed_site(self) -> None:
        now = self.clock()
        site = FakeCourse(
            id=self._next("course"),
            fullname=self.site_name,
            shortname="moodletest",
            categoryid=0,
            summary="Local test instance",
            format="site",
            newsitems=3,
            enablecompletion=0,
            manual_enrolment=False,
            timecreated=now,
            timemodified=now,
            cacherev=THEME_REVISION,
            contextid=self._new_context("course", SITE_ID),
        )
        self._tables.courses[site.id] = site
        for username, first, last in (
            ("guest", "Guest user", " "),
            ("admin", "Admin", "User"),
            ("wsuser", "Zoho", "Sync"),
            ("wsnocap", "Rest", "Only"),
        ):
            self.add_user(username, firstname=first, lastname=last)
        self.add_category("Category 1")

    def add_token(
        self,
        token: str,
        *,
        userid: int = WS_USER_ID,
        functions: Iterable[str] | None = None,
        capable: bool = True,
        lacking: Iterable[str] = (),
    ) -> None:
        """Accept `token` for `userid`, limited to `functions` when given (else the service).
        `lacking` names capabilities its user does not have; the fake knows the effect of
        `moodle/category:viewcourselist` (category look-ups answer `[]`, with no error)."""
        with self._lock:
            chosen = frozenset(functions) if functions is not None else None
            self._tokens[token] = _Token(userid, chosen, capable, frozenset(lacking))

    def add_user(
        self,
        username: str,
        *,
        firstname: str = "Test",
        lastname: str = "User",
        email: str | None = None,
        idnumber: str = "",
        auth: str = "manual",
        password: str | None = None,
        suspended: bool = False,
        city: str = "",
        country: str = "",
        description: str | None = None,
    ) -> FakeUser:
        """Create a user directly, as an administrator would (no web-service checks)."""
        with self._lock:
            now = self.clock()
            user_id = self._next("user")
            user = FakeUser(
                id=user_id,
                username=username,
                firstname=firstname,
                lastname=lastname,
                email=email if email is not None else f"{username}@example.com",
                idnumber=idnumber,
                auth=auth,
                suspended=suspended,
                city=city,
                country=country,
                description=description,
                password_hash=_hash_password(password) if password else "",
                timecreated=now,
                timemodified=now,
                contextid=self._new_context("user", user_id),
            )
            self._tables.users[user.id] = user
            return user

    def add_category(
        self, name: str, *, parent: int = 0, idnumber: str = "", visible: bool = True
    ) -> FakeCategory:
        with self._lock:
            category_id = self._next("category")
            category = FakeCategory(
                id=category_id,
                name=name,
                parent=parent,
                idnumber=idnumber,
                visible=visible,
                timemodified=self.clock(),
                contextid=self._new_context("coursecat", category_id),
                position=self._next("position"),
            )
            self._tables.categories[category.id] = category
            return category

    def add_course(
        self,
        fullname: str,
        shortname: str,
        *,
        categoryid: int = 1,
        idnumber: str = "",
        visible: bool = True,
        manual_enrolment: bool = True,
        startdate: int = 0,
        enddate: int = 0,
    ) -> FakeCourse:
        with self._lock:
            now = self.clock()
            course_id = self._next("course")
            course = FakeCourse(
                id=course_id,
                fullname=fullname,
                shortname=shortname,
                categoryid=categoryid,
                idnumber=idnumber,
                visible=int(visible),
                startdate=startdate,
                enddate=enddate,
                manual_enrolment=manual_enrolment,
                timecreated=now,
                timemodified=now,
                cacherev=now,
                contextid=self._new_context("course", course_id),
                position=self._next("position"),
            )
            self._tables.courses[course.id] = course
            return course

    def add_enrolment(
        self,
        userid: int,
        courseid: int,
        roleid: int | None = 5,
        *,
        suspended: bool = False,
        timestart: int = 0,
        timeend: int = 0,
    ) -> None:
        """Enrol directly (manual enrolment), adding `roleid` to the user's roles in the course."""
        with self._lock:
            now = self.clock()
            course = self._tables.courses[courseid]
            self._tables.enrolments[(userid, courseid)] = _Enrolment(
                userid, courseid, suspended, timestart, timeend, now, now
            )
            if roleid is not None:
                self._tables.role_assignments.add((userid, course.contextid, roleid))

    def remove_manual_instance(self, courseid: int) -> None:
        """Delete the course's manual enrolment instance, with the enrolments it held."""
        with self._lock:
            course = self._tables.courses[courseid]
            self._tables.courses[courseid] = replace(course, manual_enrolment=False)
            for userid, enrolled_course in list(self._tables.enrolments):
                if enrolled_course == courseid:
                    self._unenrol(userid, course)

    # ---- looking at the state --------------------------------------------------------------

    def users(self, *, include_deleted: bool = False) -> list[FakeUser]:
        with self._lock:
            return [
                user for user in self._tables.users.values() if include_deleted or not user.deleted
            ]

    def user(self, username: str) -> FakeUser | None:
        with self._lock:
            return next(
                (user for user in self._tables.users.values() if user.username == username), None
            )

    def user_by_id(self, userid: int) -> FakeUser | None:
        with self._lock:
            return self._tables.users.get(userid)

    def check_password(self, userid: int, password: str) -> bool:
        with self._lock:
            user = self._tables.users.get(userid)
            return user is not None and user.password_hash == _hash_password(password)

    def categories(self) -> list[FakeCategory]:
        with self._lock:
            return list(self._tables.categories.values())

    def category_path(self, categoryid: int) -> str:
        with self._lock:
            return self._category_path(categoryid)

    def courses(self) -> list[FakeCourse]:
        with self._lock:
            return list(self._tables.courses.values())

    def course(self, shortname: str) -> FakeCourse | None:
        with self._lock:
            return next(
                (c for c in self._tables.courses.values() if c.shortname == shortname), None
            )

    def enrolments(self, courseid: int | None = None) -> list[FakeEnrolment]:
        with self._lock:
            return [
                FakeEnrolment(
                    userid=enrolment.userid,
                    courseid=enrolment.courseid,
                    roles=self._course_roles(enrolment.userid, enrolment.courseid),
                    suspended=enrolment.suspended,
                    timestart=enrolment.timestart,
                    timeend=enrolment.timeend,
                )
                for enrolment in self._tables.enrolments.values()
                if courseid is None or enrolment.courseid == courseid
            ]

    def enrolment(self, userid: int, courseid: int) -> FakeEnrolment | None:
        found = [e for e in self.enrolments(courseid) if e.userid == userid]
        return found[0] if found else None

    def course_roles(self, userid: int, courseid: int) -> tuple[int, ...]:
        """The user's roles in the course context, enrolled or not."""
        with self._lock:
            return self._course_roles(userid, courseid)

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # ---- faults ----------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 503, applied: bool = False) -> None:
        """Answer the next `count` calls with HTTP `status` and an HTML page, as a proxy would."""
        self._queue(Fault("status", status=status, applied=applied), count)

    def drop_next(self, count: int = 1, *, applied: bool = False) -> None:
        """Cut the connection in the middle of the next `count` answers."""
        self._queue(Fault("drop", applied=applied), count)

    def delay_next(self, count: int = 1, *, seconds: float) -> None:
        """Answer the next `count` calls only after `seconds`."""
        self._queue(Fault("delay", seconds=seconds), count)

    @contextmanager
    def fault(self, fault: Fault) -> Iterator[None]:
        """Apply `fault` to every call while the block runs."""
        with self._lock:
            self._standing_faults.append(fault)
        try:
            yield
        finally:
            with self._lock:
                self._standing_faults.remove(fault)

    def set_fault(self, fault: Fault | None) -> None:
        """Apply `fault` to every call until it is set to None (for a server in another thread)."""
        with self._lock:
            self._standing_faults = [fault] if fault is not None else []

    def clear_faults(self) -> None:
        with self._lock:
            self._queued_faults.clear()
            self._standing_faults.clear()

    def _queue(self, fault: Fault, count: int) -> None:
        with self._lock:
            self._queued_faults.extend([fault] * count)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if self._queued_faults:
                return self._queued_faults.pop(0)
            return self._standing_faults[-1] if self._standing_faults else None

    # ---- HTTP ------------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into this fake, for an in-process `httpx.AsyncClient`."""
        return httpx.ASGITransport(app=self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if scope["path"].startswith("/_fake/"):
            response = await self._control(request)
            await response(scope, receive, send)
            return
        if scope["path"] != ENDPOINT:
            await Response("<h1>Not found</h1>", 404, media_type="text/html")(scope, receive, send)
            return
        body = await request.body()
        fault = self._take_fault()
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            fault = None
        if fault is None:
            if self.latency is None:
                answer = self._handle_http(request, body)
            else:
                answer = await self._handle_in_time(request, body, self.latency)
            await Response(answer.body, answer.status, media_type=answer.content_type)(
                scope, receive, send
            )
            return
        self._note_fault(
            request, body, fault, self._handle_http(request, body) if fault.applied else None
        )
        if fault.kind == "status":
            page = f"<html><body><h1>{fault.status} Service Unavailable</h1></body></html>"
            await Response(page, fault.status, media_type="text/html")(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"sitename":', "more_body": True})
        # Raised after the answer started: a server closes the socket, ASGITransport hands the
        # error to the client; either way the client sees a broken connection.
        raise httpx.RemoteProtocolError("fake Moodle dropped the connection mid-answer")

    async def _handle_in_time(
        self, request: Request, body: bytes, latency: LatencyModel
    ) -> FakeAnswer:
        """Answer after the time the latency model gives the call, on one of its workers."""
        workers, shared = self._latency_gates(latency)
        async with workers:
            started = time.monotonic()
            answer = self._handle_http(request, body)
            overlapping, serial = latency.seconds(answer)
            await asyncio.sleep(max(0.0, overlapping - (time.monotonic() - started)))
            async with shared:
                await asyncio.sleep(serial)
        return answer

    def _latency_gates(self, latency: LatencyModel) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        """The PHP workers and the resource they share, for the running event loop (an
        in-process fake may serve several loops one after the other)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._gates is None or self._gates[0] is not loop:
                self._gates = (loop, asyncio.Semaphore(latency.workers), asyncio.Lock())
            return self._gates[1], self._gates[2]

    def _handle_http(self, request: Request, body: bytes) -> FakeAnswer:
        return self.handle(
            method=request.method,
            query=request.scope.get("query_string", b""),
            body=body,
            content_type=request.headers.get("content-type", ""),
        )

    def handle(self, *, method: str, query: bytes, body: bytes, content_type: str) -> FakeAnswer:
        """Answer one web-service request the way Moodle's REST server does."""
        with self._lock:
            get_vars, query_sent, query_dropped = parse_php_form(
                query.decode("latin-1"), self.max_input_vars
            )
            post_vars: dict[str, Php] = {}
            body_sent = body_dropped = 0
            if method == "POST" and content_type.lower().startswith(
                "application/x-www-form-urlencoded"
            ):
                post_vars, body_sent, body_dropped = parse_php_form(
                    body.decode("utf-8", "replace"), self.max_input_vars + 1
                )
            variables = {**get_vars, **post_vars}
            fmt = variables.pop("moodlewsrestformat", None)
            response_format = fmt if fmt in ("json", "xml") else "xml"
            token = variables.pop("wstoken", None)
            function = variables.pop("wsfunction", None)
            for key in _SETTING_KEYS:
                variables.pop(key, None)
            function_name = function if isinstance(function, str) and function else None
            batch = variables.get(BATCH_KEYS.get(function_name or "", ""))
            results = 0
            try:
                result = self._execute(token, function_name, variables)
                text = php_json(result) if response_format == "json" else result_xml(result)
                outcome = "ok"
                results = _records_in(result)
            except MoodleError as error:
                text = self._error_text(error, response_format)
                outcome = error.errorcode
            call = FakeCall(
                method=method,
                function=function_name,
                items=len(batch) if isinstance(batch, dict) else 0,
                post_vars=body_sent,
                query_vars=query_sent,
                dropped_vars=body_dropped + query_dropped,
                outcome=outcome,
                format=response_format,
            )
            self.calls.append(call)
            content = (
                "application/json"
                if response_format == "json"
                else "application/xml; charset=utf-8"
            )
            return FakeAnswer(200, text, content, call, results)

    def _error_text(self, error: MoodleError, response_format: str) -> str:
        if response_format == "xml":
            return error_xml(error, self.debug)
        body = {
            "exception": error.exception,
            "errorcode": error.errorcode,
            "message": error.message,
        }
        if self.debug and error.debuginfo is not None:
            body["debuginfo"] = error.debuginfo
        return php_json(body)

    def _note_fault(
        self, request: Request, body: bytes, fault: Fault, answer: FakeAnswer | None
    ) -> None:
        lost = f"http {fault.status}" if fault.kind == "status" else "dropped"
        with self._lock:
            if answer is not None:
                index = next(i for i, call in enumerate(self.calls) if call is answer.call)
                self.calls[index] = replace(answer.call, outcome=f"{answer.call.outcome}, {lost}")
                return
            query = dict(parse_qsl(request.url.query, keep_blank_values=True))
            self.calls.append(
                FakeCall(
                    method=request.method,
                    function=query.get("wsfunction") or None,
                    items=0,
                    post_vars=body.count(b"&") + 1 if body else 0,
                    query_vars=len(query),
                    dropped_vars=0,
                    outcome=lost,
                    format="json",
                )
            )

    def _execute(self, token: Php, function: str | None, variables: dict[str, Php]) -> Any:
        caller = self._tokens.get(token) if isinstance(token, str) else None
        if caller is None:
            raise moodle_exception("invalidtoken", "Invalid token - token not found")
        if function is None:
            raise invalid_parameter("Missing function name")
        if function not in KNOWN_FUNCTIONS:
            raise missing_record(
                "external_functions",
                "SELECT * FROM {external_functions} WHERE name = ?",
                [function],
            )
        if function not in self._service_functions(caller):
            raise MoodleError(
                "webservice_access_exception",
                "accessexception",
                "Access control exception",
                _ACCESS_DEBUGINFO.format(name=function),
            )
        params = validate(PARAMS[function], variables)
        handler = HANDLERS[function]
        if function not in TRANSACTIONAL:
            return handler(self, params, caller)
        saved = self._tables.copy()
        try:
            return handler(self, params, caller)
        except Exception:
            self._tables = saved
            raise

    def _service_functions(self, caller: _Token) -> tuple[str, ...]:
        if caller.functions is None:
            return SERVED_FUNCTIONS
        return tuple(name for name in SERVED_FUNCTIONS if name in caller.functions)

    async def _control(self, request: Request) -> Response:
        """Test hooks for a fake running in another process."""
        path = request.url.path
        if path == "/_fake/calls" and request.method == "GET":
            with self._lock:
                return JSONResponse([call.__dict__ for call in self.calls])
        if path == "/_fake/state" and request.method == "GET":
            with self._lock:
                state = {
                    "users": [_public(user) for user in self.users(include_deleted=True)],
                    "categories": [category.__dict__ for category in self.categories()],
                    "courses": [course.__dict__ for course in self.courses()],
                    "enrolments": [enrolment.__dict__ for enrolment in self.enrolments()],
                }
            return JSONResponse(state)
        if path == "/_fake/faults" and request.method == "DELETE":
            self.clear_faults()
            return JSONResponse({"faults": 0})
        if path == "/_fake/faults" and request.method == "POST":
            spec = await request.json()
            fault = Fault(
                spec["kind"],
                status=int(spec.get("status", 503)),
                seconds=float(spec.get("seconds", 0.0)),
                applied=bool(spec.get("applied", False)),
            )
            count = spec.get("count")
            if count is None:
                self.set_fault(fault)
            else:
                self._queue(fault, int(count))
            return JSONResponse({"fault": fault.__dict__, "count": count})
        return JSONResponse({"error": "unknown control endpoint"}, status_code=404)

    # ---- helpers shared by the functions ---------------------------------------------------

    def _next(self, sequence: str) -> int:
        value = self._sequences[sequence]
        self._sequences[sequence] = value + 1
        return value

    def _new_context(self, level: str, instanceid: int) -> int:
        contextid = self._next("context")
        self._tables.contexts[contextid] = (level, instanceid)
        return contextid

    def _user_details_url(self, size: str) -> str:
        return f"{self.site_url}/theme/image.php/boost/core/{THEME_REVISION}/u/{size}"

    def _course_roles(self, userid: int, courseid: int) -> tuple[int, ...]:
        course = self._tables.courses.get(courseid)
        if course is None:
            return ()
        return tuple(
            sorted(
                roleid
                for user, contextid, roleid in self._tables.role_assignments
                if user == userid and contextid == course.contextid
            )
        )

    def _unenrol(self, userid: int, course: FakeCourse) -> None:
        self._tables.enrolments.pop((userid, course.id), None)
        self._tables.role_assignments = {
            assignment
            for assignment in self._tables.role_assignments
            if not (assignment[0] == userid and assignment[1] == course.contextid)
        }

    def _category_order(self) -> list[int]:
        children: dict[int, list[FakeCategory]] = {}
        for category in self._tables.categories.values():
            children.setdefault(category.parent, []).append(category)
        order: list[int] = []

        def walk(parent: int) -> None:
            for child in sorted(children.get(parent, []), key=lambda c: c.position):
                order.append(child.id)
                walk(child.id)

        walk(0)
        return order

    def _category_sortorders(self) -> dict[int, int]:
        return {
            categoryid: MAX_COURSES_IN_CATEGORY * (index + 1)
            for index, categoryid in enumerate(self._category_order())
        }

    def _category_path(self, categoryid: int) -> str:
        path: list[int] = []
        current: FakeCategory | None = self._tables.categories.get(categoryid)
        while current is not None:
            path.insert(0, current.id)
            current = self._tables.categories.get(current.parent)
        return "".join(f"/{part}" for part in path)

    def _course_sortorder(self, course: FakeCourse, sortorders: Mapping[int, int]) -> int:
        if course.id == SITE_ID:
            return 1
        # New courses go to the top of their category, as create_course() leaves them.
        siblings = sorted(
            (c for c in self._tables.courses.values() if c.categoryid == course.categoryid),
            key=lambda c: -c.position,
        )
        rank = next(index for index, c in enumerate(siblings) if c.id == course.id)
        return sortorders.get(course.categoryid, 0) + rank + 1

    def _enrolment_active(self, enrolment: _Enrolment, now: int) -> bool:
        course = self._tables.courses.get(enrolment.courseid)
        return (
            course is not None
            and course.manual_enrolment
            and not enrolment.suspended
            and enrolment.timestart < now
            and (enrolment.timeend == 0 or enrolment.timeend > now)
        )

    def _assigned_users(self) -> set[int]:
        return {userid for userid, _, _ in self._tables.role_assignments}

    def _user_details(
        self,
        user: FakeUser,
        *,
        assigned: set[int],
        course: FakeCourse | None = None,
        fields: frozenset[str] | None = None,
        enrolled_courses: Sequence[FakeCourse] = (),
    ) -> dict[str, Any]:
        """user_get_user_details() seen by the web-service user, keys in Moodle's return order."""

        def wanted(name: str) -> bool:
            return fields is None or name in fields

        details: dict[str, Any] = {"id": user.id}
        for name in ("username", "firstname", "lastname"):
            if wanted(name):
                details[name] = getattr(user, name)
        details["fullname"] = user.fullname
        if wanted("email"):
            details["email"] = user.email
        for name in ("address", "phone1", "phone2"):
            if wanted(name) and getattr(user, name):
                details[name] = getattr(user, name)
        if wanted("department"):
            details["department"] = user.department
        for name in ("institution", "idnumber", "interests"):
            if wanted(name) and getattr(user, name):
                details[name] = getattr(user, name)
        if wanted("firstaccess"):
            details["firstaccess"] = 0
        if wanted("lastaccess"):
            details["lastaccess"] = 0
        if course is not None and (fields is None or "lastcourseaccess" in fields):
            details["lastcourseaccess"] = 0
        if course is None:
            details.update(
                auth=user.auth,
                suspended=user.suspended,
                confirmed=user.confirmed,
                lang=user.lang,
                theme=user.theme,
                timezone=user.timezone,
                mailformat=user.mailformat,
                trackforums=0,
            )
        # profilesforenrolledusersonly: a description shows once the user holds some role.
        if wanted("description") and user.description is not None and user.id in assigned:
            details["description"] = user.description
            details["descriptionformat"] = user.descriptionformat
        for name in ("city", "country"):
            if wanted(name) and getattr(user, name):
                details[name] = getattr(user, name)
        if wanted("profileimageurlsmall"):
            details["profileimageurlsmall"] = self._user_details_url("f2")
        if wanted("profileimageurl"):
            details["profileimageurl"] = self._user_details_url("f1")
        if wanted("customfields") and user.customfields:
            details["customfields"] = [
                {"type": "text", "value": value, "name": name, "shortname": name}
                for name, value in user.customfields.items()
            ]
        if course is not None and wanted("roles"):
            details["roles"] = [
                {"roleid": roleid, "name": "", "shortname": ROLES[roleid], "sortorder": 0}
                for roleid in self._course_roles(user.id, course.id)
            ]
        if course is not None and wanted("enrolledcourses") and enrolled_courses:
            details["enrolledcourses"] = [
                {
                    "id": c.id,
                    "fullname": format_string(c.fullname),
                    "shortname": format_string(c.shortname),
                }
                for c in enrolled_courses
            ]
        return details

    def _visible_enrolled_courses(self, userid: int, now: int) -> list[FakeCourse]:
        """enrol_get_users_courses($userid, true): active enrolments the user may see."""
        courses = []
        for (enrolled, courseid), enrolment in self._tables.enrolments.items():
            course = self._tables.courses.get(courseid)
            if enrolled != userid or course is None or not self._enrolment_active(enrolment, now):
                continue
            if not course.visible and not VIEW_HIDDEN_ROLES & set(
                self._course_roles(userid, courseid)
            ):
                continue
            courses.append(course)
        sortorders = self._category_sortorders()
        return sorted(courses, key=lambda c: (-c.visible, self._course_sortorder(c, sortorders)))

    def _course_info(
        self, course: FakeCourse, sortorders: Mapping[int, int], *, full: bool
    ) -> dict[str, Any]:
        category = self._tables.categories.get(course.categoryid)
        now = self.clock()
        contacts = [
            {"id": user.id, "fullname": user.fullname}
            for user in sorted(self._tables.users.values(), key=lambda u: (u.lastname, u.firstname))
            if COURSE_CONTACT_ROLE in self._course_roles(user.id, course.id)
            and (enrolment := self._tables.enrolments.get((user.id, course.id))) is not None
            and self._enrolment_active(enrolment, now)
        ]
        is_site = course.id == SITE_ID
        info: dict[str, Any] = {
            "id": course.id,
            "fullname": format_string(course.fullname),
            "displayname": format_string(course.fullname),
            "shortname": format_string(course.shortname),
            "courseimage": (
                f"{self.site_url}/pluginfile.php/{course.contextid}/course/generated/course.svg"
            ),
            "categoryid": course.categoryid,
            "categoryname": format_string(category.name) if category else "",
            "sortorder": self._course_sortorder(course, sortorders),
            "summary": course.summary,
            "summaryformat": course.summaryformat,
            "summaryfiles": [],
            "overviewfiles": [],
            "showactivitydates": not is_site,
            "showcompletionconditions": None if is_site else True,
            "contacts": contacts,
            "enrollmentmethods": ["manual"] if course.manual_enrolment else [],
        }
        if not full:
            return info
        info.update(
            idnumber=course.idnumber,
            format=course.format,
            showgrades=course.showgrades,
            newsitems=course.newsitems,
            startdate=course.startdate,
            enddate=course.enddate,
            maxbytes=course.maxbytes,
            showreports=course.showreports,
            visible=course.visible,
            groupmode=course.groupmode,
            groupmodeforce=course.groupmodeforce,
            defaultgroupingid=course.defaultgroupingid,
            enablecompletion=course.enablecompletion,
            completionnotify=course.completionnotify,
            lang=course.lang,
            theme=course.theme,
            marker=0,
            legacyfiles=0,
            calendartype="",
            timecreated=course.timecreated,
            timemodified=course.timemodified,
            requested=0,
            cacherev=course.cacherev,
            filters=[dict(item) for item in _FILTERS],
        )
        if not is_site:
            info["courseformatoptions"] = [
                {"name": "hiddensections", "value": course.hiddensections},
                {"name": "coursedisplay", "value": course.coursedisplay},
                {"name": "indentation", "value": "1"},
            ]
        return info

    # ---- the web-service functions ---------------------------------------------------------

    def _get_site_info(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        user = self._tables.users[caller.userid]
        names = self._service_functions(caller)
        if params["serviceshortnames"] and SERVICE_SHORTNAME not in params["serviceshortnames"]:
            names = ()
        return {
            "sitename": self.site_name,
            "username": user.username,
            "firstname": user.firstname,
            "lastname": user.lastname,
            "fullname": user.fullname,
            "lang": user.lang,
            "userid": user.id,
            "siteurl": self.site_url,
            "userpictureurl": self._user_details_url("f1"),
            "functions": [
                {
                    "name": name,
                    "version": "2024100700" if name.startswith("enrol_manual") else VERSION,
                }
                for name in names
            ],
            "downloadfiles": 0,
            "uploadfiles": 0,
            "release": RELEASE,
            "version": VERSION,
            "mobilecssurl": "",
            "advancedfeatures": [{"name": n, "value": v} for n, v in _ADVANCED_FEATURES],
            "usercanmanageownfiles": True,
            "userquota": 104857600,
            "usermaxuploadfilesize": 67108864,
            "userhomepage": 1,
            "userprivateaccesskey": hashlib.md5(f"key-{user.id}".encode()).hexdigest(),  # noqa: S324
            "siteid": SITE_ID,
            "sitecalendartype": "gregorian",
            "usercalendartype": "gregorian",
            "userissiteadmin": user.id == ADMIN_ID,
            "theme": "boost",
            "limitconcurrentlogins": 0,
            "policyagreed": 0,
        }

    def _create_users(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        if not caller.capable:
            raise no_permission("Create users")
        now = self.clock()
        usernames = {user.username for user in self._tables.users.values()}
        emails = {user.email.lower() for user in self._tables.users.values()}
        created = []
        for item in params["users"]:
            for name in ("username", "firstname", "lastname"):
                if php_trim(item[name]) == "":
                    raise invalid_parameter(f"The field {name} cannot be blank")
            if item["username"] in usernames:
                raise invalid_parameter(f"Username already exists: {item['username']}")
            if item["auth"] not in CREATABLE_AUTHS:
                raise invalid_parameter(f"Invalid authentication type: {item['auth']}")
            if item["lang"] not in LANGUAGES:
                raise invalid_parameter(f"Invalid language code: {item['lang']}")
            if item.get("theme") and item["theme"] not in THEMES:
                raise invalid_parameter(f"Invalid theme: {item['theme']}")
            if not validate_email(item["email"]):
                raise invalid_parameter(f"Email address is invalid: {item['email']}")
            # allowaccountssameemail is off: duplicates are found case-insensitively.
            if item["email"].lower() in emails:
                raise invalid_parameter(f"Email address already exists: {item['email']}")
            createpassword = bool(item.get("createpassword"))
            internal = item["auth"] in INTERNAL_AUTHS
            if internal and not item.get("password") and not createpassword:
                raise invalid_parameter(
                    "Invalid password: you must provide a password, or set createpassword."
                )
            password_hash = ""
            if internal and not createpassword:
                errors = password_policy_errors(item["password"])
                if errors:
                    raise password_error(errors)
                password_hash = _hash_password(item["password"])
            user_id = self._next("user")
            preferences = {p["type"]: p["value"] for p in item.get("preferences") or []}
            if createpassword:
                preferences["auth_forcepasswordchange"] = "1"
                preferences["create_password"] = "1"
            user = FakeUser(
                id=user_id,
                username=item["username"],
                firstname=item["firstname"],
                lastname=item["lastname"],
                email=item["email"],
                idnumber=item["idnumber"],
                auth=item["auth"],
                lang=item["lang"],
                calendartype=item["calendartype"],
                theme=item.get("theme") or "",
                timezone=item.get("timezone") or "99",
                mailformat=item.get("mailformat", 1),
                maildisplay=item.get("maildisplay", 2),
                city=item.get("city") or "",
                country=item.get("country") or "",
                description=item.get("description"),
                department=item.get("department") or "",
                institution=item.get("institution") or "",
                interests=item.get("interests") or "",
                phone1=item.get("phone1") or "",
                phone2=item.get("phone2") or "",
                address=item.get("address") or "",
                firstnamephonetic=item.get("firstnamephonetic") or "",
                lastnamephonetic=item.get("lastnamephonetic") or "",
                middlename=item.get("middlename") or "",
                alternatename=item.get("alternatename") or "",
                password_hash=password_hash,
                preferences=preferences,
                customfields={f["type"]: f["value"] for f in item.get("customfields") or []},
                timecreated=now,
                timemodified=now,
                contextid=self._new_context("user", user_id),
            )
            self._tables.users[user.id] = user
            usernames.add(user.username)
            emails.add(user.email.lower())
            created.append({"id": user.id, "username": user.username})
        return created

    def _update_users(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        if not caller.capable:
            raise no_permission("Update user profiles")
        warnings = []
        for item in params["users"]:
            # Each user is updated in a transaction of its own; a failure becomes a warning.
            saved = self._tables.copy()
            try:
                self._update_user(item, caller)
            except MoodleError as error:
                self._tables = saved
                warnings.append(
                    {
                        "item": "user",
                        "itemid": item["id"],
                        "warningcode": error.errorcode,
                        "message": error.message,
                    }
                )
        return {"warnings": warnings}

    def _update_user(self, item: dict[str, Php], caller: _Token) -> None:
        user = self._tables.users.get(item["id"])
        if user is None:
            raise moodle_exception("invaliduserid", "Invalid user ID")
        if user.id == ADMIN_ID and caller.userid != ADMIN_ID:
            raise moodle_exception("usernotupdatedadmin", "Cannot update admin accounts")
        if user.deleted:
            raise moodle_exception("usernotupdateddeleted", "User is a deleted user")
        if user.id == GUEST_ID:
            raise moodle_exception("usernotupdatedguest", "Cannot update guest account")
        email = item.get("email")
        if email is not None and email != user.email:
            if not validate_email(email):
                raise moodle_exception("useremailinvalid", "error/useremailinvalid")
            if any(
                other.email.lower() == email.lower() and other.id != user.id
                for other in self._tables.users.values()
            ):
                raise moodle_exception("useremailduplicate", "error/useremailduplicate")
        changes: dict[str, Any] = {
            key: value
            for key, value in item.items()
            if key not in ("id", "password", "preferences", "customfields", "userpicture")
        }
        if "password" in item:
            errors = password_policy_errors(item["password"])
            if errors:
                raise password_error(errors)
            changes["password_hash"] = _hash_password(item["password"])
        username = item.get("username")
        if username not in (None, user.username) and any(
            other.username == username for other in self._tables.users.values()
        ):
            # The unique index on username refuses the write.
            raise MoodleError(
                "dml_write_exception", "dmlwriteexception", "Error writing to database"
            )
        if "preferences" in item:
            changes["preferences"] = {
                **user.preferences,
                **{p["type"]: p["value"] for p in item["preferences"]},
            }
        if "customfields" in item:
            changes["customfields"] = {
                **user.customfields,
                **{f["type"]: f["value"] for f in item["customfields"]},
            }
        if changes.get("calendartype") == "":
            del changes["calendartype"]
        changes["timemodified"] = self.clock()
        self._tables.users[user.id] = replace(user, **changes)

    def _get_users_by_field(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        field_name = params["field"]
        kinds = {"id": "int", "idnumber": "raw", "username": "username", "email": "raw_trimmed"}
        if field_name not in kinds:
            raise coding_error(
                "invalid field parameter",
                f"The search field '{field_name}' is not supported, look at the web service "
                "documentation",
            )
        wanted: set[Php] = set()
        for value in params["values"]:
            cleaned = clean_param(value, kinds[field_name])
            if _php_loose_differs(value, cleaned):
                raise invalid_parameter(
                    f"The field '{field_name}' value is invalid: {value}"
                    f"(cleaned value: {php_string(cleaned)})"
                )
            wanted.add(cleaned)
        if not caller.capable:
            return []
        assigned = self._assigned_users()
        return [
            self._user_details(user, assigned=assigned)
            for user in sorted(self._tables.users.values(), key=lambda u: u.id)
            if getattr(user, field_name) in wanted
        ]

    def _get_users(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        allowed = ("id", "lastname", "firstname", "idnumber", "username", "email", "auth")
        warnings: list[dict[str, Any]] = []
        tests: list[Callable[[FakeUser], bool]] = []
        for criterion in params["criteria"]:
            key, value = criterion["key"], criterion["value"]
            if key not in allowed:
                warnings.append(
                    {
                        "item": key,
                        "warningcode": "invalidfieldparameter",
                        "message": f"The search key '{key}' is not supported, look at the web "
                        "service documentation",
                    }
                )
                continue
            if key in ("email", "lastname", "firstname"):
                pattern = like_pattern(value)
                tests.append(_matches(key, pattern))
            elif key == "id":
                tests.append(_equals("id", php_intval(value)))
            else:
                tests.append(_equals(key, value))
        users: list[dict[str, Any]] = []
        if tests and caller.capable:
            assigned = self._assigned_users()
            users = [
                self._user_details(user, assigned=assigned)
                for user in sorted(self._tables.users.values(), key=lambda u: u.id)
                if not user.deleted and all(test(user) for test in tests)
            ]
        return {"users": users, "warnings": warnings}

    def _delete_users(self, params: dict[str, Php], caller: _Token) -> None:
        if not caller.capable:
            raise no_permission("Delete users")
        for userid in params["userids"]:
            user = self._tables.users.get(userid)
            if user is None or user.deleted:
                raise missing_record(
                    "user", "SELECT * FROM {user} WHERE id = ? AND deleted = ?", [userid, 0]
                )
            if user.id == ADMIN_ID:
                raise moodle_exception(
                    "useradminodelete", "Administrator accounts cannot be deleted."
                )
            if user.id == caller.userid:
                raise moodle_exception("usernotdeletederror", "User not deleted - error")
            if user.id == GUEST_ID:
                continue
            now = self.clock()
            stamp = str(now)
            prefix = clean_username(user.email or f"{user.username}.{user.id}@unknownemail.invalid")
            for enrolled, courseid in list(self._tables.enrolments):
                if enrolled == user.id:
                    self._unenrol(user.id, self._tables.courses[courseid])
            self._tables.role_assignments = {
                a for a in self._tables.role_assignments if a[0] != user.id
            }
            self._tables.users[user.id] = replace(
                user,
                username=f"{prefix[: 100 - len(stamp) - 1]}.{stamp}",
                email=hashlib.md5(user.username.encode()).hexdigest(),  # noqa: S324
                idnumber="",
                deleted=True,
                timemodified=now,
            )

    def _create_categories(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        created = []
        for item in params["categories"]:
            if item["parent"] and item["parent"] not in self._tables.categories:
                raise moodle_exception("unknowcategory", "Category not known!")
            if not caller.capable:
                raise no_permission("Manage course categories")
            if item["descriptionformat"] not in TEXT_FORMATS:
                raise moodle_exception("formatnotsupported", "Format not supported")
            name = php_trim(item["name"])
            self._check_category_name(name)
            idnumber = item.get("idnumber") or ""
            self._check_category_idnumber(idnumber, None)
            category_id = self._next("category")
            category = FakeCategory(
                id=category_id,
                name=name,
                parent=item["parent"],
                idnumber=idnumber,
                description=item.get("description") or "",
                descriptionformat=item["descriptionformat"],
                theme=item.get("theme") or "",
                timemodified=self.clock(),
                contextid=self._new_context("coursecat", category_id),
                position=self._next("position"),
            )
            self._tables.categories[category.id] = category
            created.append({"id": category.id, "name": format_string(category.name)})
        return created

    def _check_category_name(self, name: str) -> None:
        if name == "":
            raise moodle_exception("categorynamerequired", "The category name is required")
        if len(name) > 255:
            raise moodle_exception("categorytoolong", "Category name too long")

    def _check_category_idnumber(self, idnumber: str, own_id: int | None) -> None:
        if len(idnumber) > 100:
            raise moodle_exception("idnumbertoolong", "ID number is too long")
        if idnumber and any(
            c.idnumber == idnumber and c.id != own_id for c in self._tables.categories.values()
        ):
            raise moodle_exception(
                "categoryidnumbertaken", "ID number is already used for another category"
            )

    def _get_categories(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        conditions: dict[str, Callable[[FakeCategory], bool]] = {}
        # Recorded on 4.5.6: without it every category is left out, with no error.
        blind = "moodle/category:viewcourselist" in caller.lacking
        for criterion in params["criteria"]:
            key, value = criterion["key"], criterion["value"]
            if key in conditions:
                continue
            if key in ("idnumber", "visible", "theme") and not caller.capable:
                raise moodle_exception(
                    "criteriaerror",
                    "Missing permissions to search on a criterion.",
                    f'You don\'t have the permissions to search on the "{key}" field.',
                )
            if key in ("id", "parent"):
                conditions[key] = _equals(key, php_intval(value))
            elif key == "ids":
                ids = {php_intval(part) for part in clean_param(value, "sequence").split(",")}
                conditions[key] = _within("id", frozenset(ids))
            elif key == "name":
                conditions[key] = _equals("name", strip_tags(value))
            elif key in ("idnumber", "theme"):
                conditions[key] = _equals(key, value)
            elif key == "visible":
                conditions[key] = _equals("visible", bool(php_intval(value)))
            else:
                raise moodle_exception(
                    "criteriaerror",
                    "Missing permissions to search on a criterion.",
                    f"You can not search on this criteria: {key}",
                )
        categories = list(self._tables.categories.values())
        if conditions:
            matches = [c for c in categories if all(test(c) for test in conditions.values())]
            if matches and params["addsubcategories"]:
                paths = [self._category_path(c.id) + "/" for c in matches]
                extra = [
                    c
                    for c in categories
                    if any(self._category_path(c.id).startswith(p) for p in paths)
                    and all(
                        test(c) for key, test in conditions.items() if key in ("visible", "theme")
                    )
                ]
                matches += [c for c in extra if c not in matches]
            categories = matches
        sortorders = self._category_sortorders()
        hidden: set[int] = set()
        result = []
        for category in sorted(categories, key=lambda c: self._category_path(c.id)):
            parents = [int(p) for p in self._category_path(category.id).split("/")[1:-1]]
            if blind or (not caller.capable and (not category.visible or hidden & set(parents))):
                hidden.add(category.id)
                continue
            info: dict[str, Any] = {
                "id": category.id,
                "name": format_string(category.name),
            }
            if caller.capable:
                info["idnumber"] = category.idnumber
            info.update(
                description=category.description,
                descriptionformat=category.descriptionformat,
                parent=category.parent,
                sortorder=sortorders[category.id],
                coursecount=sum(
                    1 for c in self._tables.courses.values() if c.categoryid == category.id
                ),
            )
            if caller.capable:
                info.update(
                    visible=int(category.visible),
                    visibleold=int(category.visible),
                    timemodified=category.timemodified,
                )
            info.update(depth=self._category_path(category.id).count("/"))
            info["path"] = self._category_path(category.id)
            if caller.capable:
                info["theme"] = category.theme
            result.append(info)
        # Moodle sorts the answer with strcmp on the sortorder numbers.
        return sorted(result, key=lambda info: str(info["sortorder"]))

    def _update_categories(self, params: dict[str, Php], caller: _Token) -> None:
        for item in params["categories"]:
            category = self._tables.categories.get(item["id"])
            if category is None:
                raise moodle_exception("unknowcategory", "Category not known!")
            if not caller.capable:
                raise no_permission("Manage course categories")
            parent = item.get("parent")
            if parent not in (None, 0, category.parent) and parent not in self._tables.categories:
                raise missing_record(
                    "course_categories",
                    "SELECT id,parent FROM {course_categories} WHERE id = ?",
                    [parent],
                )
            if item["descriptionformat"] not in TEXT_FORMATS:
                raise moodle_exception("formatnotsupported", "Format not supported")
            changes: dict[str, Any] = {"descriptionformat": item["descriptionformat"]}
            if "name" in item:
                name = php_trim(item["name"])
                self._check_category_name(name)
                changes["name"] = name
            if "idnumber" in item and item["idnumber"] != category.idnumber:
                self._check_category_idnumber(item["idnumber"], category.id)
                changes["idnumber"] = item["idnumber"]
            if "description" in item:
                changes["description"] = item["description"]
            if "theme" in item:
                changes["theme"] = item["theme"]
            if parent is not None and parent != category.parent:
                ancestors = self._category_path(parent).split("/")[1:] if parent else []
                if parent == category.id or str(category.id) in ancestors:
                    raise moodle_exception("cannotmovecategory", "Cannot move category")
                changes["parent"] = parent
                changes["position"] = self._next("position")
            changes["timemodified"] = self.clock()
            self._tables.categories[category.id] = replace(category, **changes)

    def _create_courses(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        created = []
        for item in params["courses"]:
            category = self._tables.categories.get(item["categoryid"])
            if category is None:
                raise moodle_exception(
                    "errorcatcontextnotvalid",
                    "You cannot execute functions in the category context (category id:"
                    f"{item['categoryid']}). The context error message was: Invalid parameter "
                    "value detected",
                )
            if not caller.capable:
                raise no_permission("Create courses")
            for name in ("fullname", "shortname"):
                if php_trim(item[name]) == "":
                    raise invalid_param_named(name)
            if "lang" in item and item["lang"] not in LANGUAGES:
                raise invalid_param_named("lang")
            if item["summaryformat"] not in TEXT_FORMATS:
                raise moodle_exception("formatnotsupported", "Format not supported")
            self._check_course_names(item["shortname"], item.get("idnumber") or "", None)
            now = self.clock()
            startdate = item.get("startdate", now - now % DAY)
            enddate = item.get("enddate", startdate + COURSE_DURATION)
            self._check_course_dates(startdate, enddate)
            options = {o["name"]: o["value"] for o in item.get("courseformatoptions") or []}
            course_id = self._next("course")
            course = FakeCourse(
                id=course_id,
                fullname=item["fullname"],
                shortname=item["shortname"],
                categoryid=category.id,
                idnumber=item.get("idnumber") or "",
                summary=item.get("summary") or "",
                summaryformat=item["summaryformat"],
                format=item["format"],
                showgrades=item["showgrades"],
                newsitems=item["newsitems"],
                startdate=startdate,
                enddate=enddate,
                maxbytes=item["maxbytes"],
                showreports=item["showreports"],
                visible=item.get("visible", int(category.visible)),
                groupmode=item["groupmode"],
                groupmodeforce=item["groupmodeforce"],
                defaultgroupingid=item["defaultgroupingid"],
                enablecompletion=item.get("enablecompletion", 1),
                completionnotify=item.get("completionnotify", 0),
                lang=item.get("lang", ""),
                hiddensections=php_intval(
                    options.get("hiddensections", item.get("hiddensections", 1))
                ),
                coursedisplay=php_intval(options.get("coursedisplay", 0)),
                manual_enrolment=True,
                timecreated=now,
                timemodified=now,
                cacherev=now,
                contextid=self._new_context("course", course_id),
                position=self._next("position"),
            )
            self._tables.courses[course.id] = course
            created.append({"id": course.id, "shortname": course.shortname})
        return created

    def _check_course_names(self, shortname: str, idnumber: str, own_id: int | None) -> None:
        for other in self._tables.courses.values():
            if other.id != own_id and other.shortname == shortname:
                raise moodle_exception(
                    "shortnametaken", f"Short name is already used for another course ({shortname})"
                )
        for other in self._tables.courses.values():
            if idnumber and other.id != own_id and other.idnumber == idnumber:
                raise moodle_exception(
                    "courseidnumbertaken",
                    f"ID number is already used for another course ({idnumber})",
                )

    def _check_course_dates(self, startdate: int, enddate: int) -> None:
        if enddate and enddate < startdate:
            raise moodle_exception(
                "enddatebeforestartdate", "The course end date must be after the start date."
            )

    def _update_courses(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        warnings = []
        for item in params["courses"]:
            try:
                self._update_course(item, caller)
            except MoodleError as error:
                warnings.append(
                    {
                        "item": "course",
                        "itemid": item["id"],
                        "warningcode": error.errorcode,
                        "message": error.message,
                    }
                )
        return {"warnings": warnings}

    def _update_course(self, item: dict[str, Php], caller: _Token) -> None:
        course = self._tables.courses.get(item["id"])
        if course is None:
            raise missing_record(
                "course", "SELECT id,sortorder FROM {course} WHERE id = ?", [item["id"]]
            )
        if not caller.capable:
            raise require_login()
        for name in ("fullname", "shortname"):
            if name in item and item[name] != getattr(course, name) and php_trim(item[name]) == "":
                raise invalid_param_named(name)
        if "summaryformat" in item and item["summaryformat"] not in TEXT_FORMATS:
            raise moodle_exception("formatnotsupported", "Format not supported")
        if "lang" in item and item["lang"] != course.lang and item["lang"] not in LANGUAGES:
            raise invalid_param_named("lang")
        shortname = item.get("shortname", course.shortname)
        idnumber = item.get("idnumber", course.idnumber)
        self._check_course_names(shortname, idnumber, course.id)
        changes: dict[str, Any] = {
            key: value
            for key, value in item.items()
            if key not in ("id", "categoryid", "forcetheme", "numsections", "courseformatoptions")
            and key not in ("customfields", "hiddensections")
        }
        categoryid = item.get("categoryid", course.categoryid)
        if categoryid != course.categoryid:
            if categoryid not in self._tables.categories:
                raise missing_record(
                    "course_categories",
                    "SELECT * FROM {course_categories} WHERE id = ?",
                    [categoryid],
                )
            changes["categoryid"] = categoryid
            changes["position"] = self._next("position")
        self._check_course_dates(
            item.get("startdate", course.startdate), item.get("enddate", course.enddate)
        )
        options = {o["name"]: o["value"] for o in item.get("courseformatoptions") or []}
        if "hiddensections" in item or "hiddensections" in options:
            changes["hiddensections"] = php_intval(
                options.get("hiddensections", item.get("hiddensections"))
            )
        if "coursedisplay" in options:
            changes["coursedisplay"] = php_intval(options["coursedisplay"])
        now = self.clock()
        self._tables.courses[course.id] = replace(
            course, **changes, timemodified=now, cacherev=max(now, course.cacherev + 1)
        )

    def _get_courses_by_field(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        field_name, value = params["field"], params["value"]
        courses = sorted(self._tables.courses.values(), key=lambda c: c.id)
        if field_name == "id":
            courses = [c for c in courses if c.id == php_intval(value)]
        elif field_name == "ids":
            ids = {php_intval(part) for part in clean_param(value, "sequence").split(",") if part}
            courses = [c for c in courses if c.id in ids]
        elif field_name == "shortname":
            courses = [c for c in courses if c.shortname == strip_tags(value)]
        elif field_name == "idnumber":
            courses = [c for c in courses if c.idnumber == value]
        elif field_name == "category":
            courses = [c for c in courses if c.categoryid == php_intval(value)]
        elif field_name == "sectionid":
            courses = []
        elif field_name != "":
            raise invalid_parameter("Invalid field name")
        sortorders = self._category_sortorders()
        return {
            "courses": [
                self._course_info(course, sortorders, full=caller.capable)
                for course in courses
                if caller.capable or course.visible
            ],
            "warnings": [],
        }

    def _delete_courses(self, params: dict[str, Php], caller: _Token) -> dict[str, Any]:
        warnings = []
        for courseid in params["courseids"]:
            course = self._tables.courses.get(courseid)
            if course is None:
                warnings.append(
                    {
                        "item": "course",
                        "itemid": courseid,
                        "warningcode": "unknowncourseidnumber",
                        "message": f"Unknown course ID {courseid}",
                    }
                )
                continue
            if not caller.capable:
                raise require_login()
            if course.id == SITE_ID:
                warnings.append(
                    {
                        "item": "course",
                        "itemid": courseid,
                        "warningcode": "cannotdeletecategorycourse",
                        "message": f"Course {courseid} failed to be deleted",
                    }
                )
                continue
            for userid, enrolled in list(self._tables.enrolments):
                if enrolled == course.id:
                    self._unenrol(userid, course)
            self._tables.role_assignments = {
                a for a in self._tables.role_assignments if a[1] != course.contextid
            }
            del self._tables.courses[course.id]
        return {"warnings": warnings}

    def _enrol_users(self, params: dict[str, Php], caller: _Token) -> None:
        now = self.clock()
        for item in params["enrolments"]:
            course = self._tables.courses.get(item["courseid"])
            if course is None:
                raise invalid_parameter("Context does not exist")
            if not caller.capable:
                raise require_login()
            if item["roleid"] not in self._assignable_roles("course"):
                raise moodle_exception(
                    "wsusercannotassign",
                    f"You don't have the permission to assign this role ({item['roleid']}) to "
                    f"this user ({item['userid']}) in this course ({item['courseid']}).",
                )
            if not course.manual_enrolment:
                raise moodle_exception(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the "
                    f"course (id = {item['courseid']})",
                )
            user = self._tables.users.get(item["userid"])
            if user is None:
                raise missing_record("user", "SELECT * FROM {user} WHERE id = ?", [item["userid"]])
            # Missing times and suspend mean 0 and active: a re-enrolment resets them.
            key = (user.id, course.id)
            existing = self._tables.enrolments.get(key)
            self._tables.enrolments[key] = _Enrolment(
                userid=user.id,
                courseid=course.id,
                suspended=bool(item.get("suspend")),
                timestart=item.get("timestart", 0),
                timeend=item.get("timeend", 0),
                timecreated=existing.timecreated if existing else now,
                timemodified=now,
            )
            self._role_assign(item["roleid"], user.id, course.contextid)

    def _unenrol_users(self, params: dict[str, Php], caller: _Token) -> None:
        for item in params["enrolments"]:
            course = self._tables.courses.get(item["courseid"])
            if course is None:
                raise missing_record(
                    "course", "SELECT id,sortorder FROM {course} WHERE id = ?", [item["courseid"]]
                )
            if not caller.capable:
                raise require_login()
            if not course.manual_enrolment:
                raise moodle_exception(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the "
                    f"course (id = {item['courseid']})",
                )
            if item["userid"] not in self._tables.users:
                raise invalid_parameter(f"User id not exist: {item['userid']}")
            if "roleid" in item:
                # With a role, only that role goes; the enrolment stays.
                self._tables.role_assignments.discard(
                    (item["userid"], course.contextid, item["roleid"])
                )
            else:
                self._unenrol(item["userid"], course)

    def _get_enrolled_users(self, params: dict[str, Php], caller: _Token) -> list[dict[str, Any]]:
        onlyactive = onlysuspended = False
        fields: frozenset[str] | None = None
        limitfrom = limitnumber = 0
        sortby, descending = "id", False
        for option in params["options"]:
            name, value = option["name"], option["value"]
            if name == "onlyactive":
                onlyactive = value not in ("", "0")
            elif name == "onlysuspended":
                onlysuspended = value not in ("", "0")
            elif name == "userfields":
                fields = frozenset(clean_param(f, "alphanumext") for f in value.split(","))
            elif name == "limitfrom":
                limitfrom = php_intval(value)
            elif name == "limitnumber":
                limitnumber = php_intval(value)
            elif name == "sortby":
                if value not in ("id", "firstname", "lastname", "siteorder"):
                    raise invalid_parameter(
                        f"Invalid value for sortby parameter (value: {value}), allowed values "
                        "are: id,firstname,lastname,siteorder"
                    )
                sortby = "id" if value == "siteorder" else value
            elif name == "sortdirection":
                if value.upper() not in ("ASC", "DESC"):
                    raise invalid_parameter(
                        "Invalid value for sortdirection parameter\n                        "
                        f"(value: {value.upper()}),allowed values are: ASC,DESC"
                    )
                descending = value.upper() == "DESC"
        courseid = params["courseid"]
        course = self._tables.courses.get(courseid)
        if course is None:
            raise missing_record("course", "SELECT * FROM {course} WHERE id = ?", [courseid])
        if not caller.capable:
            raise moodle_exception(
                "errorcoursecontextnotvalid",
                f"You cannot execute functions in the course context (course id:{courseid}). "
                "The context error message was: Course or activity not accessible.",
            )
        if onlyactive and onlysuspended:
            raise coding_error(
                "Both onlyactive and onlysuspended are set, this is probably not what you want!"
            )
        for name in fields or ():
            if name not in USER_FIELDS:
                raise moodle_exception("invaliduserfield", f"Invalid user field: {name}")
        now = self.clock()
        enrolled = []
        for (userid, enrolled_course), enrolment in self._tables.enrolments.items():
            if enrolled_course != courseid:
                continue
            active = self._enrolment_active(enrolment, now)
            if (onlyactive and not active) or (onlysuspended and active):
                continue
            enrolled.append(self._tables.users[userid])
        enrolled.sort(key=lambda u: getattr(u, sortby), reverse=descending)
        enrolled = enrolled[limitfrom:]
        if limitnumber > 0:
            enrolled = enrolled[:limitnumber]
        assigned = self._assigned_users()
        return [
            self._user_details(
                user,
                assigned=assigned,
                course=course,
                fields=fields,
                enrolled_courses=self._visible_enrolled_courses(user.id, now),
            )
            for user in enrolled
        ]

    def _assign_roles(self, params: dict[str, Php], caller: _Token) -> None:
        contexts = self._tables.contexts
        for item in params["assignments"]:
            contextid: int | None
            if item.get("contextid"):
                contextid = item["contextid"] if item["contextid"] in contexts else None
            elif item.get("contextlevel") and "instanceid" in item:
                level = item["contextlevel"]
                if level not in CONTEXT_LEVELS:
                    raise invalid_parameter(f"Invalid context level = {level}")
                wanted = (level, item["instanceid"])
                contextid = next((cid for cid, found in contexts.items() if found == wanted), None)
            else:
                raise invalid_parameter(
                    "Missing parameters, please provide either context level with instance id "
                    "or contextid"
                )
            if contextid is None:
                raise invalid_parameter("Context does not exist")
            level = contexts[contextid][0]
            if not caller.capable:
                if level in ("course", "module", "block"):
                    raise require_login()
                raise no_permission("Assign roles to users")
            if item["roleid"] not in self._assignable_roles(level):
                raise invalid_parameter(
                    f"Can not assign roleid={item['roleid']} in "
                    f"contextid={item.get('contextid', '')}"
                )
            self._role_assign(item["roleid"], item["userid"], contextid)

    def _assignable_roles(self, level: str) -> frozenset[int]:
        return frozenset(r for r in WS_ASSIGNABLE_ROLES if level in ROLE_CONTEXT_LEVELS[r])

    def _role_assign(self, roleid: int, userid: int, contextid: int) -> None:
        user = self._tables.users.get(userid)
        if user is None or user.deleted:
            raise coding_error("User ID does not exist or is deleted!", f"userid:{userid}")
        self._tables.role_assignments.add((userid, contextid, roleid))


def _equals(attribute: str, expected: object) -> Callable[[Any], bool]:
    return lambda record: bool(getattr(record, attribute) == expected)


def _within(attribute: str, allowed: frozenset[int]) -> Callable[[Any], bool]:
    return lambda record: getattr(record, attribute) in allowed


def _matches(attribute: str, pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda record: pattern.fullmatch(getattr(record, attribute)) is not None


def _check_warnings(result: Mapping[str, Any]) -> None:
    """clean_returnvalue on warnings: a warningcode must be PARAM_ALPHANUM."""
    for warning in result["warnings"]:
        code = str(warning["warningcode"])
        if re.sub(r"[^a-zA-Z0-9]", "", code) != code:
            raise invalid_response(
                "warnings => Invalid response value detected: warningcode => Invalid response "
                f'value detected: Invalid external api response: the value is "{code}" of PHP '
                'type "string", the server was expecting "alphanum" type'
            )


def _with_warning_check(handler: Handler) -> Handler:
    def checked(fake: FakeMoodle, params: dict[str, Php], caller: _Token) -> Any:
        result = handler(fake, params, caller)
        _check_warnings(result)
        return result

    return checked


HANDLERS: Final[dict[str, Handler]] = {
    "core_webservice_get_site_info": FakeMoodle._get_site_info,
    "core_user_create_users": FakeMoodle._create_users,
    "core_user_update_users": _with_warning_check(FakeMoodle._update_users),
    "core_user_get_users_by_field": FakeMoodle._get_users_by_field,
    "core_user_get_users": FakeMoodle._get_users,
    "core_user_delete_users": FakeMoodle._delete_users,
    "core_course_create_categories": FakeMoodle._create_categories,
    "core_course_get_categories": FakeMoodle._get_categories,
    "core_course_update_categories": FakeMoodle._update_categories,
    "core_course_create_courses": FakeMoodle._create_courses,
    "core_course_update_courses": _with_warning_check(FakeMoodle._update_courses),
    "core_course_get_courses_by_field": FakeMoodle._get_courses_by_field,
    "core_course_delete_courses": _with_warning_check(FakeMoodle._delete_courses),
    "enrol_manual_enrol_users": FakeMoodle._enrol_users,
    "enrol_manual_unenrol_users": FakeMoodle._unenrol_users,
    "core_enrol_get_enrolled_users": FakeMoodle._get_enrolled_users,
    "core_role_assign_roles": FakeMoodle._assign_roles,
}


def _records_in(result: Any) -> int:
    """Records in a function's result: a list of them, or the list of a `{"users": [...]}` or
    `{"courses": [...], "warnings": [...]}` answer."""
    if isinstance(result, list):
        return len(result)
    if isinstance(result, dict):
        lists = [v for k, v in result.items() if k != "warnings" and isinstance(v, list)]
        return len(lists[0]) if len(lists) == 1 else 0
    return 0


def _public(user: FakeUser) -> dict[str, Any]:
    data = dict(user.__dict__)
    data.pop("password_hash", None)
    return data


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the web-service user's token")
    parser.add_argument(
        "--restricted-token",
        action="append",
        default=[],
        metavar="TOKEN=FUNCTION[,FUNCTION...]",
        help="a token whose service holds only these functions",
    )
    parser.add_argument("--nocap-token", help="a token of a user without capabilities")
    parser.add_argument("--debug", action="store_true", help="add debuginfo to exceptions")
    parser.add_argument("--max-input-vars", type=int, default=5000)
    parser.add_argument("--site-url", help="defaults to http://HOST:PORT")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="take as long as the measured real Moodle to answer (see LatencyModel)",
    )
    parser.add_argument(
        "--php-workers",
        type=int,
        default=PHP_WORKERS,
        help=f"with --latency: calls served at once (default {PHP_WORKERS})",
    )
    parser.add_argument(
        "--latency-scale",
        type=float,
        default=1.0,
        help="with --latency: multiply every modelled time (default 1)",
    )
    args = parser.parse_args(argv)
    latency = (
        LatencyModel(workers=args.php_workers, scale=args.latency_scale) if args.latency else None
    )
    fake = FakeMoodle(
        token=args.token,
        site_url=args.site_url or f"http://{args.host}:{args.port}",
        max_input_vars=args.max_input_vars,
        debug=args.debug,
        latency=latency,
    )
    for spec in args.restricted_token:
        token, _, functions = spec.partition("=")
        fake.add_token(token, functions=[f for f in functions.split(",") if f])
    if args.nocap_token:
        fake.add_token(args.nocap_token, userid=NOCAP_USER_ID, capable=False)
    print(f"fake Moodle on {fake.site_url}{ENDPOINT}", file=sys.stderr)
    uvicorn.run(fake, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
