"""Property tests: whatever arrives, the parsers refuse it with a `RequestRejected` (a 4xx) or
read it, and the webhook and sync routes never answer 500 nor leave a request half done.

Inputs mix arbitrary bytes with JSON built from the keys Zoho's callers use, so that examples
get past the first checks and into the pipeline.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from zoho_moodle_sync import parser, stages
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import RequestRejected
from zoho_moodle_sync.parser import WebhookEvent

PURE = settings(max_examples=200, deadline=None)
THROUGH_THE_APP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
zoho_ids = (
    st.from_regex(r"\A[0-9]{1,19}\Z") | st.integers(min_value=-1, max_value=10**25) | json_values
)
modules = st.sampled_from(
    ["BTEC_Students", "BTEC_Enrollments", "Products", "BTEC", "Contacts", ""]
) | st.text(max_size=20)
operations = st.sampled_from(["insert", "update", "delete", "edit", "Deleted", ""]) | json_values
records = st.fixed_dictionaries(
    {"id": zoho_ids},
    optional={
        "Name": json_values,
        "First_Name": json_values,
        "Last_Name": json_values,
        "Academic_Email": st.emails() | json_values,
        "Modified_Time": st.sampled_from(["2025-05-10T08:12:01+03:00", "yesterday"]) | json_values,
        "Enrolled_Students": st.fixed_dictionaries({"id": zoho_ids}) | json_values,
        "Classes": st.fixed_dictionaries({"id": zoho_ids}) | json_values,
    },
)
zoho_shaped = st.fixed_dictionaries(
    {},
    optional={
        "module": modules,
        "zoho_id": zoho_ids,
        "id": zoho_ids,
        "ids": st.lists(zoho_ids, max_size=3) | json_values,
        "operation": operations,
        "channel_id": zoho_ids,
        "token": st.text(max_size=50) | json_values,
        "data": st.lists(records | json_values, max_size=3) | json_values,
        "First_Name": st.text(max_size=20) | st.just("${BTEC_Students.First_Name}"),
    },
)
documents = zoho_shaped | json_values
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/vnd.api+json",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
    ]
) | st.text(max_size=30)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, JSON documents (pretty or compact), or forms of Zoho-like fields."""
    kind = draw(st.sampled_from(["bytes", "json", "form", "broken json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    document = draw(documents)
    if kind == "form" and isinstance(document, dict):
        return "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in document.items()).encode()
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    if kind == "broken json":
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return (text[:cut] + draw(st.sampled_from(["", ",", "}", "\x00", "\ufeff"]))).encode()
    return text.encode()


def refused_or_read(call: Any) -> Any:
    """The call's result, or None when it refused its input the expected way."""
    try:
        return call()
    except RequestRejected as rejected:
        refusal = rejected
    assert 400 <= refusal.status_code < 500
    assert refusal.message
    return None


# ---------------------------------------------------------------------------------------------
# The parsers alone
# ---------------------------------------------------------------------------------------------


@PURE
@given(body=bodies(), content_type=content_types, max_records=st.integers(1, 5))
def test_a_sync_body_is_read_or_refused_with_a_4xx(
    body: bytes, content_type: str | None, max_records: int
) -> None:
    read = refused_or_read(
        lambda: parser.parse_sync_body(body, content_type, max_records=max_records)
    )

    if read is not None:
        assert isinstance(read, list)
        assert len(read) <= max_records
        for raw in read:
            assert isinstance(parser.parse_record(raw), stages.ZohoRecord | stages.UnreadableRecord)


@PURE
@given(document=json_values, content_type=content_types)
def test_any_json_value_as_a_sync_body_is_read_or_refused_with_a_4xx(
    document: Any, content_type: str | None
) -> None:
    body = json.dumps(document).encode()

    refused_or_read(lambda: parser.parse_sync_body(body, content_type, max_records=10))


@PURE
@given(body=bodies(), content_type=content_types)
def test_a_webhook_body_is_a_dict_or_refused_with_a_4xx(
    body: bytes, content_type: str | None
) -> None:
    read = refused_or_read(lambda: parser.read_body(body, content_type))

    assert read is None or isinstance(read, dict)


@PURE
@given(
    document=st.dictionaries(st.text(max_size=12), json_values, max_size=4) | zoho_shaped,
    module=st.none() | modules,
    query=st.dictionaries(
        st.sampled_from(["zoho_id", "id", "module", "operation", "x"]), st.text(max_size=20)
    ),
)
def test_a_workflow_webhook_is_an_event_or_refused_with_a_4xx(
    document: dict[str, Any], module: str | None, query: dict[str, str]
) -> None:
    event = refused_or_read(lambda: parser.parse_workflow(document, module=module, query=query))

    if event is not None:
        assert isinstance(event, WebhookEvent)
        assert event.module
        assert event.ids
        assert all(i.isdigit() and len(i) <= 32 for i in event.ids)
        assert event.operation in ("upsert", "delete")


@PURE
@given(body=bodies(), content_type=content_types, module=st.none() | modules)
def test_a_workflow_request_is_an_event_or_refused_with_a_4xx(
    body: bytes, content_type: str | None, module: str | None
) -> None:
    refused_or_read(lambda: parser.read_workflow(body, content_type, module=module, query={}))


@PURE
@given(document=st.dictionaries(st.text(max_size=12), json_values, max_size=4) | zoho_shaped)
def test_a_notification_is_an_event_or_refused_with_a_4xx(document: dict[str, Any]) -> None:
    event = refused_or_read(lambda: parser.parse_notification(document))

    if event is not None:
        assert event.channel_id is not None
        assert all(i.isdigit() for i in event.ids)


def redacted(value: Any) -> Any:
    """`value` with every string under a "token" key, at any depth, replaced by "***"."""
    if isinstance(value, dict):
        return {
            k: "***" if k == "token" and isinstance(v, str) else redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


@PURE
@given(
    document=zoho_shaped,
    token=st.text(min_size=1, max_size=50),
    echoed=st.none() | st.text(max_size=20),
    pretty=st.booleans(),
)
def test_a_stored_notification_keeps_everything_but_its_tokens(
    document: dict[str, Any], token: str, echoed: str | None, pretty: bool
) -> None:
    """Zoho echoes the notify URL's query in `query_params`: a `?token=` there is hidden too."""
    callback = {**document, "token": token}
    if echoed is not None:
        callback["query_params"] = {"token": echoed, "school": "north"}
    body = json.dumps(callback, indent=2 if pretty else None).encode()

    stored = parser.without_token(body)

    assert json.loads(stored) == redacted(callback)
    assert json.loads(stored)["token"] == "***"


# ---------------------------------------------------------------------------------------------
# Through the app
# ---------------------------------------------------------------------------------------------

path_segments = (
    st.sampled_from(
        ["students", "enrollments", "BTEC_Students", "BTEC_Enrollments", "notifications"]
    )
    | st.text(max_size=20)
).map(lambda segment: quote(segment, safe=""))
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def header_value(raw: bytes) -> bytes:
    """What an HTTP server hands on as a header value: uvicorn answers 400 itself to control
    bytes, so the app never sees them."""
    return bytes(b for b in raw if b >= 0x20 and b != 0x7F)


header_bytes = (st.binary(max_size=40) | content_types.map(lambda t: (t or "").encode())).map(
    header_value
)


def unfinished(db: Database) -> list[tuple[int, str]]:
    """Requests stored but left neither answered-and-completed nor refused."""
    with db.sessions() as session:
        rows = session.execute(
            select(InboundEvent.id, InboundEvent.status).where(
                InboundEvent.status.in_(["received", "accepted"])
            )
        )
        return [(i, s) for i, s in rows]


@THROUGH_THE_APP
@given(
    route=st.sampled_from(
        [
            "/v1/sync/{}",
            "/v1/webhooks/zoho",
            "/v1/webhooks/zoho/{}",
            "/v1/webhooks/zoho/notifications",
        ]
    ),
    segment=path_segments,
    body=bodies(),
    content_type=st.none() | header_bytes,
    extra_headers=st.dictionaries(
        st.sampled_from(["Idempotency-Key", "X-Tenant-ID", "X-Webhook-Token"]),
        header_text,
        max_size=2,
    ),
    query=st.dictionaries(
        st.sampled_from(["zoho_id", "module", "operation", "token"]),
        st.text(max_size=20),
        max_size=2,
    ),
)
def test_no_request_to_the_sync_or_webhook_routes_gets_a_500_or_is_left_unfinished(
    client: TestClient,
    db: Database,
    route: str,
    segment: str,
    body: bytes,
    content_type: bytes | None,
    extra_headers: dict[str, str],
    query: dict[str, str],
) -> None:
    headers: dict[str, str | bytes] = dict(extra_headers)
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = client.post(route.format(segment), content=body, headers=headers, params=query)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["message"]
    assert unfinished(db) == []


@THROUGH_THE_APP
@given(document=zoho_shaped, as_form=st.booleans(), module=st.none() | modules)
def test_zoho_shaped_webhooks_never_get_a_500_or_are_left_unfinished(
    client: TestClient, db: Database, document: dict[str, Any], as_form: bool, module: str | None
) -> None:
    url = "/v1/webhooks/zoho" if module is None else f"/v1/webhooks/zoho/{quote(module, safe='')}"
    if as_form:
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}
        response = client.post(url, data=form)
    else:
        response = client.post(url, json=document)

    assert response.status_code < 500, response.text
    assert unfinished(db) == []
