"""The Moodle client against the fake Moodle, and against broken networks and odd answers."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from tests.fakes.moodle import NOCAP_USER_ID, FakeMoodle, Fault
from zoho_moodle_sync.errors import (
    MoodleAccessDenied,
    MoodleRejected,
    MoodleUnavailable,
    RetryableError,
)
from zoho_moodle_sync.moodle import (
    CategoryCriterion,
    CategoryUpdate,
    CourseUpdate,
    CustomField,
    Enrolment,
    MoodleClient,
    NewCategory,
    NewCourse,
    NewUser,
    Unenrolment,
    UserUpdate,
    encode_moodle_params,
    max_items_per_call,
    moodle_username,
    unescape_moodle_text,
)

pytestmark = pytest.mark.anyio

TOKEN = "7f3a9c0e5b1d4f2a8c6e0b9d7a5f3c1e"
BASE_URL = "https://moodle.college.test"
STUDENT, EDITING_TEACHER, TEACHER = 5, 3, 4

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeMoodle:
    return FakeMoodle()


@pytest.fixture
async def http(fake: FakeMoodle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        yield client


@pytest.fixture
def client(fake: FakeMoodle, http: httpx.AsyncClient) -> MoodleClient:
    return MoodleClient(base_url=fake.site_url, token=fake.token, http=http)


def student(username: str, **fields: object) -> NewUser:
    values: dict[str, object] = {
        "username": username,
        "firstname": username.capitalize(),
        "lastname": "Student",
        "email": f"{username}@college.test",
        "password": SecretStr("Passw0rd!x"),
    }
    values.update(fields)
    return NewUser.model_validate(values)


@asynccontextmanager
async def mocked(handler: Handler) -> AsyncIterator[MoodleClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield MoodleClient(base_url=BASE_URL, token=TOKEN, http=http)


def answer(body: str, *, status: int = 200, content_type: str = "application/json") -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body, headers={"content-type": content_type})

    return handle


def rendered(error: BaseException) -> str:
    """Everything a log line with a traceback would show of `error`."""
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.args)


# ---- encoding ------------------------------------------------------------------------------


def test_items_are_flattened_in_php_bracket_notation_in_request_order() -> None:
    users = [student("ann", idnumber="Z-1"), student("bob", city="Berlin")]

    pairs = encode_moodle_params({"users": users})

    assert pairs[:6] == [
        ("users[0][username]", "ann"),
        ("users[0][firstname]", "Ann"),
        ("users[0][lastname]", "Student"),
        ("users[0][email]", "ann@college.test"),
        ("users[0][password]", "Passw0rd!x"),
        ("users[0][idnumber]", "Z-1"),
    ]
    assert ("users[1][city]", "Berlin") in pairs
    assert ("users[1][idnumber]", "Z-1") not in pairs


def test_nested_lists_go_one_bracket_level_deeper() -> None:
    user = student("ann", customfields=[CustomField(type="zohoid", value="5725")])

    pairs = dict(encode_moodle_params({"users": [user]}))

    assert pairs["users[0][customfields][0][type]"] == "zohoid"
    assert pairs["users[0][customfields][0][value]"] == "5725"


def test_booleans_are_sent_as_1_and_0_and_none_is_not_sent_at_all() -> None:
    pairs = encode_moodle_params(
        {"users": [UserUpdate(id=5, suspended=True), UserUpdate(id=6, suspended=False)]}
    )

    assert pairs == [
        ("users[0][id]", "5"),
        ("users[0][suspended]", "1"),
        ("users[1][id]", "6"),
        ("users[1][suspended]", "0"),
    ]


def test_an_empty_list_sends_nothing_because_php_forms_cannot_say_empty_array() -> None:
    assert encode_moodle_params({"options": [], "courseid": 2}) == [("courseid", "2")]


def test_values_moodle_cannot_receive_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        encode_moodle_params({"value": object()})


def test_a_password_is_hidden_in_the_model_but_sent_in_the_body() -> None:
    user = student("ann")

    assert "Passw0rd!x" not in repr(user)
    assert ("users[0][password]", "Passw0rd!x") in encode_moodle_params({"users": [user]})


# ---- usernames and batch sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [("JDoe", "jdoe"), ("ann.smith-2@college.test", "ann.smith-2@college.test"), ("a_b", "a_b")],
)
def test_usernames_are_lower_cased_as_moodle_stores_them(given: str, stored: str) -> None:
    assert moodle_username(given) == stored


@pytest.mark.parametrize(
    ("given", "reported"),
    [("bad user!", "' ', '!'"), ("ünïcode", "'ï', 'ü'"), ("tab\tname", "'\\t'")],
)
def test_usernames_with_characters_moodle_rejects_are_reported(given: str, reported: str) -> None:
    with pytest.raises(ValueError, match="characters Moodle rejects") as error:
        moodle_username(given)

    assert str(error.value).endswith(reported)


@pytest.mark.parametrize("given", ["", "x" * 101])
def test_empty_or_overlong_usernames_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match="username"):
        moodle_username(given)


@pytest.mark.parametrize(
    ("fields", "limit", "items"), [(5, 5000, 1000), (7, 5000, 714), (5, 1000, 200), (1, 1, 1)]
)
def test_max_items_per_call_fills_but_never_passes_max_input_vars(
    fields: int, limit: int, items: int
) -> None:
    assert max_items_per_call(fields, limit) == items
    assert items * fields <= limit < (items + 1) * fields


@pytest.mark.parametrize(("fields", "limit"), [(0, 5000), (5001, 5000), (5, 0)])
def test_max_items_per_call_refuses_sizes_that_cannot_make_a_batch(fields: int, limit: int) -> None:
    with pytest.raises(ValueError, match=r"must be at least 1|more than max_input_vars"):
        max_items_per_call(fields, limit)


# ---- transport -----------------------------------------------------------------------------


async def test_token_function_and_format_travel_in_the_query_string_and_params_in_the_body() -> (
    None
):
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[{"id": 5, "username": "ann"}])

    async with mocked(handle) as client:
        await client.create_users([student("ann")])

    [request] = seen
    assert request.method == "POST"
    assert str(request.url).startswith(f"{BASE_URL}/webservice/rest/server.php?")
    assert dict(request.url.params) == {
        "wstoken": TOKEN,
        "wsfunction": "core_user_create_users",
        "moodlewsrestformat": "json",
    }
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    body = parse_qsl(request.content.decode())
    assert ("users[0][username]", "ann") in body
    assert not any(name.startswith(("wstoken", "wsfunction")) for name, _ in body)


async def test_batch_calls_with_nothing_to_send_make_no_request(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    assert await client.create_users([]) == []
    assert await client.update_users([]) == []
    assert await client.get_users_by_field("username", []) == []
    await client.enrol_users([])
    await client.unenrol_users([])
    await client.update_categories([])

    assert fake.calls == []


async def test_a_batch_that_would_pass_max_input_vars_is_refused_before_sending(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    users = [student(f"u{n}") for n in range(1001)]

    with pytest.raises(ValueError, match="max_input_vars"):
        await client.create_users(users)

    assert fake.calls == []


async def test_a_batch_of_max_items_per_call_arrives_whole(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    fields_per_user = len(encode_moodle_params({"users": [student("u0")]}))
    users = [student(f"u{n}") for n in range(max_items_per_call(fields_per_user))]

    created = await client.create_users(users)

    assert len(created) == len(users) == 1000
    [call] = fake.calls
    assert (call.post_vars, call.query_vars, call.dropped_vars) == (5000, 3, 0)


# ---- answers that are not Moodle's JSON ------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (answer("<html>Bad gateway</html>", status=502, content_type="text/html"), "HTTP 502"),
        (answer('{"exception":"x"}', status=500), "HTTP 500"),
        (answer("", status=503), "HTTP 503"),
        (answer("", status=404, content_type="text/html"), "HTTP 404"),
        (
            answer(
                '<?xml version="1.0" encoding="UTF-8" ?>\n<EXCEPTION class="x"></EXCEPTION>',
                content_type="application/xml; charset=utf-8",
            ),
            "instead of JSON",
        ),
        (answer("<br />\n<b>Warning</b>: oops", content_type="text/html"), "instead of JSON"),
        (answer("Fatal error", content_type="text/plain"), "not JSON"),
        (answer(""), "not JSON"),
        (answer('{"wrong": "shape"}'), "unexpected answer shape"),
    ],
)
async def test_answers_that_are_not_moodle_json_are_unavailable_and_retryable(
    handler: Handler, reason: str
) -> None:
    async with mocked(handler) as client:
        with pytest.raises(MoodleUnavailable, match=reason) as error:
            await client.get_site_info()

    assert isinstance(error.value, RetryableError)
    assert str(error.value).startswith("core_webservice_get_site_info: ")


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError],
)
async def test_network_failures_are_unavailable(failure: type[httpx.TransportError]) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise failure("the line broke", request=request)

    async with mocked(handle) as client:
        with pytest.raises(MoodleUnavailable, match=failure.__name__):
            await client.enrol_users([Enrolment(roleid=5, userid=5, courseid=2)])


async def test_the_literal_null_body_is_success_for_functions_without_a_result() -> None:
    async with mocked(answer("null")) as client:
        await client.enrol_users([Enrolment(roleid=5, userid=5, courseid=2)])
        raw = await client.call("enrol_manual_enrol_users", {"enrolments": []})

    assert raw is None


async def test_an_exception_body_is_rejected_with_everything_moodle_said() -> None:
    body = json.dumps(
        {
            "exception": "core\\exception\\invalid_parameter_exception",
            "errorcode": "invalidparameter",
            "message": "Invalid parameter value detected",
            "debuginfo": "Username already exists: ann",
        }
    )
    async with mocked(answer(body)) as client:
        with pytest.raises(MoodleRejected) as error:
            await client.create_users([student("ann")])

    rejection = error.value
    assert not isinstance(rejection, MoodleAccessDenied)
    assert (rejection.errorcode, rejection.message, rejection.debuginfo, rejection.function) == (
        "invalidparameter",
        "Invalid parameter value detected",
        "Username already exists: ann",
        "core_user_create_users",
    )
    assert rejection.exception == "core\\exception\\invalid_parameter_exception"


# ---- the token stays secret ----------------------------------------------------------------


def echo_token_everywhere(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "exception": "core\\exception\\moodle_exception",
            "errorcode": "invalidparameter",
            "message": f"bad call {request.url}",
            "debuginfo": f"token was {TOKEN}",
        },
    )


def connect_error_naming_the_url(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"cannot reach {request.url}", request=request)


@pytest.mark.parametrize(
    "handler",
    [
        echo_token_everywhere,
        connect_error_naming_the_url,
        answer("<html>down</html>", status=503, content_type="text/html"),
        answer('{"sitename": 1}'),
        answer(f"<?xml?><EXCEPTION>{TOKEN}</EXCEPTION>", content_type="application/xml"),
    ],
    ids=["echoed-by-moodle", "network-error", "http-503", "bad-shape", "xml"],
)
async def test_the_token_appears_in_no_exception_whatever_fails(handler: Handler) -> None:
    async with mocked(handler) as client:
        with pytest.raises((MoodleUnavailable, MoodleRejected)) as error:
            await client.get_site_info()

    assert TOKEN not in rendered(error.value)
    assert error.value.__cause__ is None


async def test_the_token_appears_in_no_log_line(
    client: MoodleClient, fake: FakeMoodle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    await client.get_site_info()
    with pytest.raises(MoodleRejected):
        await client.get_users_by_field("id", ["abc"])

    assert "HTTP Request: POST" in caplog.text, "httpx logs the request line with the URL"
    assert fake.token not in caplog.text
    assert all(fake.token not in record.getMessage() for record in caplog.records)


async def test_the_client_repr_leaves_out_the_token(http: httpx.AsyncClient) -> None:
    client = MoodleClient(base_url=BASE_URL, token=TOKEN, http=http)

    assert TOKEN not in repr(client)
    assert BASE_URL in repr(client)


@pytest.mark.parametrize("base_url", ["ftp://moodle.test", "moodle.test", "http://"])
async def test_a_base_url_that_is_not_http_is_refused(
    base_url: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ValueError, match="base URL"):
        MoodleClient(base_url=base_url, token=TOKEN, http=http)


# ---- access errors: the tenant is misconfigured ----------------------------------------------


async def test_a_wrong_token_is_access_denied(fake: FakeMoodle, http: httpx.AsyncClient) -> None:
    client = MoodleClient(base_url=fake.site_url, token="not-the-token", http=http)

    with pytest.raises(MoodleAccessDenied) as error:
        await client.get_site_info()

    assert error.value.errorcode == "invalidtoken"
    assert error.value.message == "Invalid token - token not found"


async def test_a_function_outside_the_tokens_service_is_access_denied(
    fake: FakeMoodle, http: httpx.AsyncClient
) -> None:
    fake.add_token("reader", functions=["core_webservice_get_site_info"])
    client = MoodleClient(base_url=fake.site_url, token="reader", http=http)

    info = await client.get_site_info()
    with pytest.raises(MoodleAccessDenied) as error:
        await client.create_users([student("ann")])

    assert info.function_names == {"core_webservice_get_site_info"}
    assert (error.value.errorcode, error.value.exception) == (
        "accessexception",
        "webservice_access_exception",
    )
    assert fake.users()[-1].username == "wsnocap", "nothing was created"


async def test_missing_capabilities_are_access_denied(
    fake: FakeMoodle, http: httpx.AsyncClient
) -> None:
    fake.add_token("nocap", userid=NOCAP_USER_ID, capable=False)
    course = fake.add_course("Maths", "MATH1")
    client = MoodleClient(base_url=fake.site_url, token="nocap", http=http)

    with pytest.raises(MoodleAccessDenied, match="Create users") as system_level:
        await client.create_users([student("ann")])
    with pytest.raises(MoodleAccessDenied) as course_level:
        await client.enrol_users([Enrolment(roleid=STUDENT, userid=5, courseid=course.id)])

    assert system_level.value.errorcode == "nopermissions"
    assert course_level.value.errorcode == "requireloginerror"


async def test_a_role_the_ws_user_may_not_assign_is_access_denied(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    course = fake.add_course("Maths", "MATH1")
    user = fake.add_user("ann")

    with pytest.raises(MoodleAccessDenied) as error:
        await client.enrol_users([Enrolment(roleid=7, userid=user.id, courseid=course.id)])

    assert error.value.errorcode == "wsusercannotassign"
    assert fake.enrolments(course.id) == []


async def test_a_site_without_the_function_is_access_denied() -> None:
    body = json.dumps(
        {
            "exception": "dml_missing_record_exception",
            "errorcode": "invalidrecord",
            "message": "Can't find data record in database table external_functions.",
        }
    )
    async with mocked(answer(body)) as client:
        with pytest.raises(MoodleAccessDenied):
            await client.get_site_info()


# ---- site and users ------------------------------------------------------------------------


async def test_site_info_names_the_token_user_and_the_functions_it_may_call(
    client: MoodleClient,
) -> None:
    info = await client.get_site_info()

    assert (info.username, info.userid, info.release) == ("wsuser", 3, "4.5.6 (Build: 20250811)")
    assert {"core_user_create_users", "enrol_manual_enrol_users"} <= info.function_names


async def test_created_users_come_back_in_request_order_and_exist(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    created = await client.create_users(
        [student("ann", idnumber="ZOHO-1"), student("bob", createpassword=True, password=None)]
    )

    assert [user.username for user in created] == ["ann", "bob"]
    ann, bob = fake.user("ann"), fake.user("bob")
    assert ann is not None
    assert bob is not None
    assert [user.id for user in created] == [ann.id, bob.id]
    assert ann.idnumber == "ZOHO-1"
    assert fake.check_password(ann.id, "Passw0rd!x")
    assert bob.preferences["auth_forcepasswordchange"] == "1"


async def test_a_batch_with_one_bad_user_creates_nobody(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    fake.add_user("taken")

    with pytest.raises(MoodleRejected) as error:
        await client.create_users([student("fresh"), student("taken")])

    assert error.value.errorcode == "invalidparameter"
    assert fake.user("fresh") is None


@pytest.mark.parametrize(
    "user",
    [
        student("Upper"),
        student("ann", email="not-an-email"),
        student("ann", password=None),
        student("ann", auth="nosuchauth"),
        student("ann", lang=""),
        student("ann", firstname=" "),
    ],
    ids=["uppercase-username", "bad-email", "no-password", "unknown-auth", "empty-lang", "blank"],
)
async def test_users_moodle_refuses_are_invalidparameter(
    client: MoodleClient, fake: FakeMoodle, user: NewUser
) -> None:
    with pytest.raises(MoodleRejected) as error:
        await client.create_users([user])

    assert error.value.errorcode == "invalidparameter"
    assert len(fake.users()) == 4


async def test_an_email_differing_only_in_case_is_a_duplicate(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    fake.add_user("first", email="Ann.Smith@College.TEST")

    with pytest.raises(MoodleRejected, match="invalidparameter"):
        await client.create_users([student("second", email="ann.smith@college.test")])


async def test_a_weak_password_is_refused_with_the_policy_as_errorcode(
    client: MoodleClient,
) -> None:
    with pytest.raises(MoodleRejected) as error:
        await client.create_users([student("ann", password=SecretStr("abc"))])

    assert error.value.errorcode.startswith("<div>Passwords must be at least 8 characters long.")
    assert error.value.message == f"error/{error.value.errorcode}"


async def test_idnumber_is_not_unique_so_a_lookup_returns_every_holder(
    client: MoodleClient,
) -> None:
    await client.create_users([student("ann", idnumber="ZOHO-7")])
    await client.create_users([student("bob", idnumber="ZOHO-7")])

    found = await client.get_users_by_field("idnumber", ["ZOHO-7"])

    assert [user.username for user in found] == ["ann", "bob"]


async def test_email_lookup_is_case_sensitive(client: MoodleClient) -> None:
    await client.create_users([student("ann", email="Ann@College.test")])

    assert await client.get_users_by_field("email", ["ann@college.test"]) == []
    [found] = await client.get_users_by_field("email", ["Ann@College.test"])
    assert (found.username, found.suspended, found.auth) == ("ann", False, "manual")


async def test_update_users_reports_bad_items_as_warnings_and_saves_the_others(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    ann = fake.add_user("ann")

    warnings = await client.update_users(
        [
            UserUpdate(id=ann.id, firstname="Annie", suspended=True),
            UserUpdate(id=999999, email="ghost@college.test"),
            UserUpdate(id=ann.id, email="bad-email"),
        ]
    )

    assert [(w.itemid, w.warningcode) for w in warnings] == [
        (999999, "invaliduserid"),
        (ann.id, "useremailinvalid"),
    ]
    updated = fake.user("ann")
    assert updated is not None
    assert (updated.firstname, updated.suspended) == ("Annie", True)


async def test_suspended_users_can_be_reactivated(client: MoodleClient, fake: FakeMoodle) -> None:
    ann = fake.add_user("ann", suspended=True)

    assert await client.update_users([UserUpdate(id=ann.id, suspended=False)]) == []

    [found] = await client.get_users_by_field("id", [ann.id])
    assert found.suspended is False


async def test_a_weak_password_on_update_fails_the_whole_call(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    ann = fake.add_user("ann")

    with pytest.raises(MoodleRejected) as error:
        await client.update_users([UserUpdate(id=ann.id, password=SecretStr("abc"))])

    assert error.value.errorcode == "invalidresponse"


async def test_suspended_is_not_accepted_when_creating_a_user(client: MoodleClient) -> None:
    with pytest.raises(MoodleRejected, match="invalidparameter"):
        await client.call(
            "core_user_create_users",
            {"users": [{**student("ann").model_dump(exclude_none=True), "suspended": True}]},
        )


# ---- categories ----------------------------------------------------------------------------


async def test_categories_nest_and_may_share_a_name_but_not_an_idnumber(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    [top] = await client.create_categories([NewCategory(name="Programs", idnumber="ZCAT-1")])
    [sub] = await client.create_categories([NewCategory(name="BTEC", parent=top.id)])
    [twin] = await client.create_categories([NewCategory(name="Programs")])

    with pytest.raises(MoodleRejected) as taken:
        await client.create_categories([NewCategory(name="Other", idnumber="ZCAT-1")])
    with pytest.raises(MoodleRejected) as orphan:
        await client.create_categories([NewCategory(name="Orphan", parent=99999)])

    assert twin.id not in (top.id, sub.id)
    assert fake.category_path(sub.id) == f"/{top.id}/{sub.id}"
    assert taken.value.errorcode == "categoryidnumbertaken"
    assert (orphan.value.errorcode, orphan.value.message) == (
        "unknowcategory",
        "Category not known!",
    )


async def test_get_categories_returns_exactly_the_matches_with_names_escaped(
    client: MoodleClient,
) -> None:
    [top] = await client.create_categories([NewCategory(name="Arts & Crafts", idnumber="ZCAT-9")])
    await client.create_categories([NewCategory(name="Painting", parent=top.id)])

    [found] = await client.get_categories([CategoryCriterion(key="idnumber", value="ZCAT-9")])
    with_children = await client.get_categories(
        [CategoryCriterion(key="idnumber", value="ZCAT-9")], addsubcategories=True
    )

    assert (found.id, found.name) == (top.id, "Arts &amp; Crafts")
    assert unescape_moodle_text(found.name) == "Arts & Crafts"
    assert [category.name for category in with_children] == ["Arts &amp; Crafts", "Painting"]


async def test_update_categories_renames_and_moves(client: MoodleClient, fake: FakeMoodle) -> None:
    [first, second] = await client.create_categories(
        [NewCategory(name="First"), NewCategory(name="Second", idnumber="ZCAT-2")]
    )

    await client.update_categories([CategoryUpdate(id=second.id, name="Moved", parent=first.id)])
    with pytest.raises(MoodleRejected, match="categoryidnumbertaken"):
        await client.update_categories([CategoryUpdate(id=first.id, idnumber="ZCAT-2")])

    [moved] = await client.get_categories([CategoryCriterion(key="id", value=str(second.id))])
    assert (moved.name, moved.parent, moved.depth) == ("Moved", first.id, 2)
    assert fake.category_path(second.id) == f"/{first.id}/{second.id}"


# ---- courses -------------------------------------------------------------------------------


async def test_a_new_course_can_take_manual_enrolments_and_reads_back_escaped(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    [created] = await client.create_courses(
        [NewCourse(fullname="Verify & Check", shortname="VC1", categoryid=1, idnumber="ZC-1")]
    )

    [course] = await client.get_courses_by_field("idnumber", "ZC-1")

    assert course.id == created.id
    assert course.fullname == "Verify &amp; Check"
    assert unescape_moodle_text(course.fullname) == "Verify & Check"
    assert course.has_manual_enrolment
    stored = fake.course("VC1")
    assert stored is not None
    assert stored.manual_enrolment


async def test_optional_course_fields_left_unset_are_not_sent(client: MoodleClient) -> None:
    await client.create_courses([NewCourse(fullname="A", shortname="A1", categoryid=1)])

    with pytest.raises(MoodleRejected) as error:
        await client.create_courses(
            [NewCourse(fullname="B", shortname="B1", categoryid=1, lang="")]
        )

    assert (error.value.errorcode, error.value.message) == (
        "errorinvalidparam",
        'The param "lang" is invalid.',
    )


@pytest.mark.parametrize(
    ("course", "errorcode"),
    [
        (NewCourse(fullname="X", shortname="TAKEN", categoryid=1), "shortnametaken"),
        (
            NewCourse(fullname="X", shortname="NEW", categoryid=1, idnumber="ZC-1"),
            "courseidnumbertaken",
        ),
        (NewCourse(fullname="X", shortname="NEW", categoryid=99999), "errorcatcontextnotvalid"),
    ],
)
async def test_course_conflicts_are_rejected(
    client: MoodleClient, fake: FakeMoodle, course: NewCourse, errorcode: str
) -> None:
    fake.add_course("Existing", "TAKEN", idnumber="ZC-1")

    with pytest.raises(MoodleRejected) as error:
        await client.create_courses([course])

    assert error.value.errorcode == errorcode
    assert fake.course("NEW") is None


async def test_update_courses_warns_per_course_and_saves_the_rest(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    first = fake.add_course("First", "F1")
    second = fake.add_course("Second", "S1")

    warnings = await client.update_courses(
        [
            CourseUpdate(id=first.id, fullname="First (renamed)", visible=0),
            CourseUpdate(id=second.id, shortname="F1"),
            CourseUpdate(id=99999, fullname="nope"),
        ]
    )

    assert [(w.itemid, w.warningcode) for w in warnings] == [
        (second.id, "shortnametaken"),
        (99999, "invalidrecord"),
    ]
    renamed = fake.course("F1")
    assert renamed is not None
    assert (renamed.fullname, renamed.visible) == ("First (renamed)", 0)


async def test_all_courses_include_the_site_course(client: MoodleClient, fake: FakeMoodle) -> None:
    fake.add_course("Maths", "MATH1")

    courses = await client.get_courses_by_field()

    assert [(course.id, course.shortname) for course in courses] == [
        (1, "moodletest"),
        (2, "MATH1"),
    ]
    assert not courses[0].has_manual_enrolment


# ---- enrolments and roles ------------------------------------------------------------------


@pytest.fixture
def course_id(fake: FakeMoodle) -> int:
    return fake.add_course("Maths", "MATH1").id


@pytest.fixture
def ann_id(fake: FakeMoodle) -> int:
    return fake.add_user("ann", description="from zoho").id


async def test_enrolling_creates_an_active_manual_enrolment_with_the_role(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    await client.enrol_users(
        [Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id, timestart=100, suspend=False)]
    )

    enrolment = fake.enrolment(ann_id, course_id)
    assert enrolment is not None
    assert (enrolment.roles, enrolment.suspended, enrolment.timestart) == ((STUDENT,), False, 100)


async def test_enrolling_again_with_another_role_adds_the_role(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    await client.enrol_users([Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id)])
    await client.enrol_users([Enrolment(roleid=EDITING_TEACHER, userid=ann_id, courseid=course_id)])

    [enrolled] = await client.get_enrolled_users(course_id)

    assert [role.shortname for role in enrolled.roles] == ["editingteacher", "student"]
    assert fake.course_roles(ann_id, course_id) == (EDITING_TEACHER, STUDENT)


async def test_enrolling_again_without_suspend_reactivates(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    await client.enrol_users(
        [Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id, suspend=True)]
    )
    suspended = await client.get_enrolled_users(course_id, onlysuspended=True)

    await client.enrol_users([Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id)])

    assert [user.id for user in suspended] == [ann_id]
    assert await client.get_enrolled_users(course_id, onlysuspended=True) == []
    enrolment = fake.enrolment(ann_id, course_id)
    assert enrolment is not None
    assert not enrolment.suspended


async def test_unenrolling_with_a_role_removes_only_that_role(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    await client.enrol_users(
        [
            Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id),
            Enrolment(roleid=TEACHER, userid=ann_id, courseid=course_id),
        ]
    )

    await client.unenrol_users([Unenrolment(userid=ann_id, courseid=course_id, roleid=STUDENT)])

    enrolment = fake.enrolment(ann_id, course_id)
    assert enrolment is not None
    assert enrolment.roles == (TEACHER,)


async def test_unenrolling_without_a_role_removes_the_enrolment_and_its_roles(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    await client.enrol_users([Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id)])

    await client.unenrol_users([Unenrolment(userid=ann_id, courseid=course_id)])
    await client.unenrol_users([Unenrolment(userid=ann_id, courseid=course_id)])

    assert fake.enrolments(course_id) == []
    assert fake.course_roles(ann_id, course_id) == ()


async def test_an_enrolment_batch_with_an_unknown_user_enrols_nobody(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    with pytest.raises(MoodleRejected) as error:
        await client.enrol_users(
            [
                Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id),
                Enrolment(roleid=STUDENT, userid=999999, courseid=course_id),
            ]
        )

    assert (error.value.errorcode, error.value.message) == ("invaliduser", "Invalid user")
    assert fake.enrolments(course_id) == []


async def test_a_course_without_manual_enrolment_refuses_enrolments(
    client: MoodleClient, fake: FakeMoodle, course_id: int, ann_id: int
) -> None:
    fake.remove_manual_instance(course_id)

    with pytest.raises(MoodleRejected) as error:
        await client.enrol_users([Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id)])
    [course] = await client.get_courses_by_field("id", course_id)

    assert error.value.errorcode == "wsnoinstance"
    assert error.value.message.endswith(f"(id = {course_id})")
    assert not course.has_manual_enrolment


async def test_enrolled_users_show_only_the_requested_fields(
    client: MoodleClient, course_id: int, ann_id: int
) -> None:
    await client.enrol_users([Enrolment(roleid=STUDENT, userid=ann_id, courseid=course_id)])

    [full] = await client.get_enrolled_users(course_id)
    [narrow] = await client.get_enrolled_users(course_id, userfields=["id", "username", "roles"])

    assert (full.username, full.email, full.role_ids) == (
        "ann",
        "ann@example.com",
        frozenset({STUDENT}),
    )
    assert [course.shortname for course in full.enrolledcourses] == ["MATH1"]
    assert (narrow.username, narrow.email, narrow.role_ids) == ("ann", None, frozenset({STUDENT}))


# ---- faults --------------------------------------------------------------------------------


async def test_an_http_error_from_the_server_is_unavailable_until_it_recovers(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    fake.fail_next(2, status=503)

    for _ in range(2):
        with pytest.raises(MoodleUnavailable, match="HTTP 503"):
            await client.get_site_info()
    info = await client.get_site_info()

    assert info.username == "wsuser"
    assert [call.outcome for call in fake.calls] == ["http 503", "http 503", "ok"]


async def test_a_dropped_connection_is_unavailable(client: MoodleClient, fake: FakeMoodle) -> None:
    fake.drop_next()

    with pytest.raises(MoodleUnavailable, match="RemoteProtocolError"):
        await client.create_users([student("ann")])

    assert fake.calls[-1].outcome == "dropped"
    assert fake.user("ann") is None


async def test_an_answer_lost_after_moodle_did_the_work_leaves_the_work_done(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    fake.drop_next(applied=True)

    with pytest.raises(MoodleUnavailable):
        await client.create_users([student("ann")])
    with pytest.raises(MoodleRejected, match="invalidparameter"):
        await client.create_users([student("ann")])

    assert fake.user("ann") is not None
    assert [call.outcome for call in fake.calls] == ["ok, dropped", "invalidparameter"]


async def test_a_slow_answer_past_the_timeout_is_unavailable(
    fake: FakeMoodle, http: httpx.AsyncClient
) -> None:
    client = MoodleClient(base_url=fake.site_url, token=fake.token, http=http, timeout=0.05)
    fake.delay_next(seconds=5)

    started = time.monotonic()
    with pytest.raises(MoodleUnavailable, match=r"no answer within 0\.05 s"):
        await client.get_site_info()

    assert time.monotonic() - started < 2
    assert (await client.get_site_info()).username == "wsuser"


async def test_a_standing_fault_lasts_while_its_block_runs(
    client: MoodleClient, fake: FakeMoodle
) -> None:
    with fake.fault(Fault("status", status=502)):
        for _ in range(3):
            with pytest.raises(MoodleUnavailable, match="HTTP 502"):
                await client.get_site_info()

    assert (await client.get_site_info()).username == "wsuser"


# ---- the fake as a real server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served_fake() -> Iterator[FakeMoodle]:
    port = free_port()
    fake = FakeMoodle(site_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(fake, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the fake did not start"
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.e2e
async def test_the_fake_serves_real_http_and_can_drop_a_real_connection(
    served_fake: FakeMoodle,
) -> None:
    async with httpx.AsyncClient() as http:
        client = MoodleClient(base_url=served_fake.site_url, token=served_fake.token, http=http)
        [created] = await client.create_users([student("ann")])
        served_fake.drop_next()
        with pytest.raises(MoodleUnavailable, match="RemoteProtocolError"):
            await client.get_site_info()
        [found] = await client.get_users_by_field("username", ["ann"])

    assert found.id == created.id


@pytest.mark.e2e
def test_the_fake_runs_from_the_command_line() -> None:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tests.fakes.moodle", "--port", str(port), "--token", "cli-token"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/webservice/rest/server.php"
        query = {
            "wstoken": "cli-token",
            "wsfunction": "core_webservice_get_site_info",
            "moodlewsrestformat": "json",
        }
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(url, params=query, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        httpx.post(f"http://127.0.0.1:{port}/_fake/faults", json={"kind": "status", "count": 1})
        failed = httpx.post(url, params=query, timeout=2)
        recovered = httpx.post(url, params=query, timeout=2)
        calls = httpx.get(f"http://127.0.0.1:{port}/_fake/calls", timeout=2).json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert reply.json()["username"] == "wsuser"
    assert reply.json()["siteurl"] == f"http://127.0.0.1:{port}"
    assert (failed.status_code, recovered.status_code) == (503, 200)
    assert [call["outcome"] for call in calls] == ["ok", "http 503", "ok"]
