"""ZohoClient against the fake Zoho: records, paging, deleted records, retries and errors."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from tests.fakes.zoho import FakeZoho, ManualClock, make_record
from tests.zoho.conftest import ATTEMPTS, ClientFactory
from zoho_moodle_sync.errors import (
    PermanentError,
    RetryableError,
    ZohoAuthError,
    ZohoRateLimited,
    ZohoRejected,
    ZohoUnavailable,
)
from zoho_moodle_sync.zoho import DeletedRecord, RetryPolicy, ZohoClient, ZohoCredentials

pytestmark = pytest.mark.anyio

LINA, OMAR, SARA = "5725767141565000101", "5725767141565000102", "5725767141565000103"
MISSING = "5725767141565999999"


def contacts(count: int, *, first_id: int = 5725767000001000000) -> list[dict[str, object]]:
    return [
        make_record(str(first_id + n), Last_Name=f"Contact {n}", Email=f"c{n}@college.example")
        for n in range(count)
    ]


# ---- single records ------------------------------------------------------------------------


async def test_get_record_returns_the_record_in_the_api_shape(client: ZohoClient) -> None:
    record = await client.get_record("BTEC_Students", LINA)

    assert record is not None
    assert record["id"] == LINA
    assert record["Name"] == "Lina Haddad"
    assert record["Owner"]["id"] == "5725767000000000001"


async def test_get_record_asks_only_for_the_named_fields(
    client: ZohoClient, fake: FakeZoho
) -> None:
    record = await client.get_record("BTEC_Students", LINA, fields=["Name", "Status"])

    assert record == {"id": LINA, "Name": "Lina Haddad", "Status": "Active"}
    assert fake.api_calls[0].query == {"fields": "Name,Status"}


async def test_get_record_of_a_missing_record_returns_none_on_204(
    client: ZohoClient, fake: FakeZoho
) -> None:
    assert await client.get_record("BTEC_Students", MISSING) is None
    assert fake.api_calls[0].status == 204


async def test_get_record_with_empty_data_returns_none(client: ZohoClient, fake: FakeZoho) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.respond_next(status=200, json_body={"data": []})

    assert await client.get_record("BTEC_Students", LINA) is None


async def test_get_record_sees_changes_and_deletions_made_in_zoho(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.update_record("BTEC_Students", LINA, {"Status": "Withdrawn"})
    fake.delete_record("BTEC_Students", OMAR)

    lina = await client.get_record("BTEC_Students", LINA)
    assert lina is not None
    assert lina["Status"] == "Withdrawn"
    assert await client.get_record("BTEC_Students", OMAR) is None


@pytest.mark.parametrize(
    ("module", "record_id"),
    [("BTEC Students", LINA), ("../settings", LINA), ("BTEC_Students", "${Contacts.Id}")],
)
async def test_bad_module_or_record_id_is_refused_before_any_request(
    client: ZohoClient, fake: FakeZoho, module: str, record_id: str
) -> None:
    with pytest.raises(ValueError, match=r"module|record id"):
        await client.get_record(module, record_id)

    assert fake.calls == []


async def test_api_version_is_configurable(make_client: ClientFactory, fake: FakeZoho) -> None:
    client = make_client(api_version="v7")

    await client.get_record("BTEC_Students", LINA)

    assert fake.api_calls[0].path == f"/crm/v7/BTEC_Students/{LINA}"
    assert client.api_version == "v7"


async def test_api_version_must_look_like_v_and_a_number(make_client: ClientFactory) -> None:
    with pytest.raises(ValueError, match="api_version"):
        make_client(api_version="8")


# ---- several records -----------------------------------------------------------------------


async def test_get_records_fetches_at_most_100_ids_per_call(
    client: ZohoClient, fake: FakeZoho
) -> None:
    records = contacts(250)
    fake.seed({"Contacts": records})
    ids = [str(record["id"]) for record in records]

    found = await client.get_records("Contacts", ids)

    assert [record["id"] for record in found] == ids
    assert [len(call.query["ids"].split(",")) for call in fake.api_calls] == [100, 100, 50]


async def test_get_records_skips_missing_ids_and_asks_once_per_id(
    client: ZohoClient, fake: FakeZoho
) -> None:
    found = await client.get_records("BTEC_Students", [LINA, MISSING, LINA, SARA])

    assert [record["id"] for record in found] == [LINA, SARA]
    assert fake.api_calls[0].query["ids"] == f"{LINA},{MISSING},{SARA}"


async def test_get_records_of_only_missing_ids_is_empty(client: ZohoClient) -> None:
    assert await client.get_records("BTEC_Students", [MISSING]) == []


async def test_get_records_of_no_ids_makes_no_call(client: ZohoClient, fake: FakeZoho) -> None:
    assert await client.get_records("BTEC_Students", []) == []
    assert fake.calls == []


# ---- paging --------------------------------------------------------------------------------


async def test_iter_records_follows_next_page_token_after_the_first_page(
    client: ZohoClient, fake: FakeZoho
) -> None:
    records = contacts(450)
    fake.seed({"Contacts": records})

    seen = [r["id"] async for r in client.iter_records("Contacts", fields=["Last_Name"])]

    assert seen == [record["id"] for record in records]
    queries = [call.query for call in fake.api_calls]
    assert queries[0] == {"fields": "Last_Name", "per_page": "200", "page": "1"}
    assert all("page_token" in query and "page" not in query for query in queries[1:])
    assert len(queries) == 3


async def test_iter_records_pages_by_number_then_by_token_past_2000_records(
    make_client: ClientFactory, fake: FakeZoho
) -> None:
    fake.page_tokens = "beyond_limit"
    records = contacts(2500)
    fake.seed({"Contacts": records})

    seen = [r["id"] async for r in make_client().iter_records("Contacts", fields=["Email"])]

    assert seen == [record["id"] for record in records]
    queries = [call.query for call in fake.api_calls]
    assert [query.get("page") for query in queries[:10]] == [str(n) for n in range(1, 11)]
    assert all("page_token" in query for query in queries[10:])
    assert len(queries) == 13


async def test_iter_records_with_small_pages_stops_when_more_records_is_false(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.page_tokens = "beyond_limit"

    seen = [
        r["id"] async for r in client.iter_records("BTEC_Students", fields=["Name"], per_page=2)
    ]

    assert seen == [LINA, OMAR, SARA]
    assert [call.query["page"] for call in fake.api_calls] == ["1", "2"]


async def test_iter_records_since_a_time_yields_only_records_modified_after_it(
    client: ZohoClient, clock: ManualClock
) -> None:
    since = clock() - timedelta(days=2, hours=1)

    seen = [
        r["id"]
        async for r in client.iter_records("BTEC_Students", fields=["Name"], modified_since=since)
    ]

    assert seen == [OMAR, SARA]


async def test_iter_records_with_nothing_modified_yields_nothing_on_304(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    seen = [
        r
        async for r in client.iter_records("BTEC_Students", fields=["Name"], modified_since=clock())
    ]

    assert seen == []
    assert fake.api_calls[0].status == 304


async def test_iter_records_of_an_empty_module_yields_nothing(client: ZohoClient) -> None:
    assert [r async for r in client.iter_records("Contacts", fields=["Email"])] == []


@pytest.mark.parametrize(
    ("fields", "per_page", "modified_since", "message"),
    [
        ([], 200, None, "fields"),
        ("Name", 200, None, "list of field"),
        (["Name"], 201, None, "per_page"),
        (["Name"], 0, None, "per_page"),
        (["Name"], 200, datetime(2025, 1, 1), "timezone"),
    ],
)
async def test_iter_records_refuses_bad_arguments_before_any_request(
    client: ZohoClient,
    fake: FakeZoho,
    fields: list[str] | str,
    per_page: int,
    modified_since: datetime | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        async for _ in client.iter_records(
            "BTEC_Students", fields=fields, per_page=per_page, modified_since=modified_since
        ):
            pass

    assert fake.calls == []


# ---- deleted records -----------------------------------------------------------------------


async def test_iter_deleted_lists_recycled_and_permanently_deleted_records(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    fake.delete_record("BTEC_Students", LINA)
    fake.delete_record("BTEC_Students", OMAR, permanent=True)

    everything = [d async for d in client.iter_deleted("BTEC_Students")]
    permanent = [d async for d in client.iter_deleted("BTEC_Students", type="permanent")]

    assert [(d.id, d.type) for d in everything] == [(LINA, "recycle"), (OMAR, "permanent")]
    assert [d.id for d in permanent] == [OMAR]
    first = everything[0]
    assert isinstance(first, DeletedRecord)
    assert first.display_name == "Lina Haddad"
    assert first.deleted_time == clock()
    assert first.deleted_by is not None
    assert first.deleted_by.name == "Zoho Admin"


async def test_iter_deleted_pages_through_many_deletions(
    client: ZohoClient, fake: FakeZoho
) -> None:
    records = contacts(250)
    fake.seed({"Contacts": records})
    for record in records:
        fake.delete_record("Contacts", str(record["id"]))

    deleted = [d.id async for d in client.iter_deleted("Contacts", type="recycle", per_page=100)]

    assert deleted == [record["id"] for record in records]
    assert [call.query["page"] for call in fake.api_calls] == ["1", "2", "3"]


async def test_iter_deleted_since_a_time_skips_older_deletions(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    fake.delete_record("BTEC_Students", LINA)
    clock.advance(timedelta(hours=1))
    fake.delete_record("BTEC_Students", SARA)

    since = clock() - timedelta(minutes=30)
    deleted = [d.id async for d in client.iter_deleted("BTEC_Students", modified_since=since)]

    assert deleted == [SARA]


async def test_iter_deleted_with_nothing_deleted_yields_nothing(client: ZohoClient) -> None:
    assert [d async for d in client.iter_deleted("BTEC_Students")] == []


# ---- retries -------------------------------------------------------------------------------


async def test_rate_limited_call_is_retried_with_backoff_then_succeeds(
    client: ZohoClient, fake: FakeZoho, sleeps: list[float]
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next(2, status=429)

    assert await client.get_record("BTEC_Students", LINA) is not None
    assert [call.status for call in fake.api_calls] == [200, 429, 429, 200]
    assert len(sleeps) == 2


async def test_rate_limited_on_every_attempt_raises_zoho_rate_limited_with_retry_after(
    client: ZohoClient, fake: FakeZoho, sleeps: list[float]
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next(ATTEMPTS, status=429, retry_after=7)

    with pytest.raises(ZohoRateLimited) as raised:
        await client.get_record("BTEC_Students", LINA)

    assert raised.value.retry_after == 7
    assert isinstance(raised.value, RetryableError)
    assert len(fake.api_calls) == 1 + ATTEMPTS
    assert sleeps == [7, 7, 7], "Zoho's Retry-After outweighs a shorter backoff"


async def test_server_error_then_success_returns_the_answer(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next(1, status=500)

    assert await client.get_record("BTEC_Students", LINA) is not None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_on_every_attempt_raise_zoho_unavailable(
    client: ZohoClient, fake: FakeZoho, status: int
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next(ATTEMPTS, status=status)

    with pytest.raises(ZohoUnavailable) as raised:
        await client.get_record("BTEC_Students", LINA)

    assert not isinstance(raised.value, ZohoRateLimited)
    assert str(status) in str(raised.value)
    assert len(fake.api_calls) == 1 + ATTEMPTS


async def test_network_errors_are_retried_then_succeed(client: ZohoClient, fake: FakeZoho) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next_with_network_error(2)

    assert await client.get_record("BTEC_Students", LINA) is not None
    assert [call.status for call in fake.api_calls] == [200, 0, 0, 200]


async def test_timeouts_on_every_attempt_raise_zoho_unavailable(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next_with_network_error(ATTEMPTS, timeout=True)

    with pytest.raises(ZohoUnavailable, match="ReadTimeout"):
        await client.get_record("BTEC_Students", LINA)


async def test_html_instead_of_json_is_treated_as_unavailable(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.respond_next(ATTEMPTS, status=200, text="<html>maintenance</html>")

    with pytest.raises(ZohoUnavailable, match="without JSON"):
        await client.get_record("BTEC_Students", LINA)


async def test_backoff_pauses_grow_exponentially_with_jitter(
    make_client: ClientFactory, fake: FakeZoho, sleeps: list[float]
) -> None:
    client = make_client(retry=RetryPolicy(attempts=5, base_delay=1.0, max_delay=6.0))
    await client.get_record("BTEC_Students", LINA)
    fake.fail_next(4, status=503)

    await client.get_record("BTEC_Students", LINA)

    steps = [1.0, 2.0, 4.0, 6.0]
    assert len(sleeps) == len(steps)
    for pause, step in zip(sleeps, steps, strict=True):
        assert step / 2 <= pause <= step


def test_backoff_jitter_spreads_pauses() -> None:
    policy = RetryPolicy(base_delay=1.0)

    assert len({policy.delay(3) for _ in range(20)}) > 1


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -1.0}])
def test_retry_policy_refuses_impossible_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"attempts|delays"):
        RetryPolicy(**bad)  # type: ignore[arg-type]


# ---- other errors --------------------------------------------------------------------------


async def test_other_error_codes_raise_zoho_rejected_without_retrying(
    client: ZohoClient, fake: FakeZoho
) -> None:
    with pytest.raises(ZohoRejected) as raised:
        await client.get_record("No_Such_Module", LINA)

    error = raised.value
    assert not isinstance(error, ZohoAuthError)
    assert isinstance(error, PermanentError)
    assert (error.code, error.status_code) == ("INVALID_MODULE", 400)
    assert "the module name given seems to be invalid" in error.message
    assert len(fake.api_calls) == 1


async def test_scope_mismatch_raises_zoho_auth_error(client: ZohoClient, fake: FakeZoho) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.respond_next(
        status=401,
        json_body={
            "code": "OAUTH_SCOPE_MISMATCH",
            "details": {},
            "message": "invalid oauth scope to access this URL",
            "status": "error",
        },
    )

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", LINA)

    assert raised.value.code == "OAUTH_SCOPE_MISMATCH"
    assert fake.refresh_count == 1, "only INVALID_TOKEN is worth a refresh"


async def test_error_inside_a_data_list_is_reported_with_its_code(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", LINA)
    fake.respond_next(
        status=400,
        json_body={
            "data": [
                {
                    "code": "INVALID_DATA",
                    "details": {"api_name": "id"},
                    "message": "the related id given seems to be invalid",
                    "status": "error",
                }
            ]
        },
    )

    with pytest.raises(ZohoRejected, match="INVALID_DATA"):
        await client.get_record("BTEC_Students", LINA)


# ---- secrets -------------------------------------------------------------------------------


async def test_no_secret_appears_in_errors_reprs_or_logs(
    make_client: ClientFactory,
    credentials: ZohoCredentials,
    fake: FakeZoho,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    errors: list[Exception] = []

    async def capture(*fail: tuple[int, str]) -> None:
        for status, target in fail:
            if target == "network":
                fake.fail_next_with_network_error(ATTEMPTS)
            else:
                fake.fail_next(ATTEMPTS, status=status, target="api")
        try:
            await client.get_record("BTEC_Students", LINA)
        except Exception as exc:
            errors.append(exc)

    await client.get_record("BTEC_Students", LINA)
    await capture((429, "api"))
    await capture((503, "api"))
    await capture((0, "network"))
    fake.fail_next(2, status=401)
    await capture()
    fake.expire_access_tokens()
    await client.get_record("BTEC_Students", LINA)
    fake.revoke_refresh_token()
    fake.expire_access_tokens()
    await capture()
    leaky = ZohoCredentials(
        client_id=credentials.client_id,
        client_secret="wrong-secret-value-42",
        refresh_token=credentials.refresh_token,
        accounts_url=credentials.accounts_url,
    )
    try:
        await make_client(credentials=leaky).get_record("BTEC_Students", LINA)
    except ZohoAuthError as exc:
        errors.append(exc)

    assert [type(e) for e in errors] == [
        ZohoRateLimited,
        ZohoUnavailable,
        ZohoUnavailable,
        ZohoAuthError,
        ZohoAuthError,
        ZohoAuthError,
    ]
    secrets = [
        credentials.client_secret.get_secret_value(),
        credentials.refresh_token.get_secret_value(),
        "wrong-secret-value-42",
        *fake.issued_tokens,
    ]
    assert len(fake.issued_tokens) >= 3
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(client), repr(credentials), repr(leaky), str(credentials)]
    texts += [repr(token) for token in [await client.oauth.token()]]
    assert caplog.records, "the scenario logs retries and refreshes"
    for text in texts:
        for secret in secrets:
            assert secret not in text


async def test_secrets_echoed_in_a_refusal_are_redacted(
    client: ZohoClient, credentials: ZohoCredentials, fake: FakeZoho
) -> None:
    refresh_token = credentials.refresh_token.get_secret_value()
    fake.respond_next(
        status=200,
        json_body={"error": "invalid_code", "error_description": f"unknown {refresh_token}"},
        target="accounts",
    )

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", LINA)

    assert refresh_token not in str(raised.value)
    assert "unknown ***" in str(raised.value)
