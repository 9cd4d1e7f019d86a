"""Notification channels: enabling and renewing `/actions/watch`, with client-side limits."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.fakes.zoho import FakeZoho, ManualClock
from zoho_moodle_sync.errors import ZohoRejected
from zoho_moodle_sync.zoho import WatchSubscription, ZohoClient

pytestmark = pytest.mark.anyio

NOTIFY_URL = "https://sync.college.example/zoho/notify?tenant=default"
WATCH_TOKEN = "tok-4f1c2a9e7b3d"


async def test_enable_watch_subscribes_each_module_until_the_expiry(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    expiry = clock() + timedelta(days=6)

    subscriptions = await client.enable_watch(
        channel_id=1000000068001,
        events=["BTEC_Students.all", "Contacts.edit"],
        notify_url=NOTIFY_URL,
        token=WATCH_TOKEN,
        expiry=expiry,
    )

    assert [(s.resource_name, s.channel_id, s.channel_expiry) for s in subscriptions] == [
        ("BTEC_Students", "1000000068001", expiry),
        ("Contacts", "1000000068001", expiry),
    ]
    assert all(isinstance(s, WatchSubscription) and s.resource_id for s in subscriptions)
    channel = fake.channels["1000000068001"]
    assert channel.events == ["BTEC_Students.all", "Contacts.edit"]
    assert (channel.notify_url, channel.token, channel.expiry) == (NOTIFY_URL, WATCH_TOKEN, expiry)
    assert channel.return_affected_field_values is False
    assert fake.api_calls[0].method == "POST"
    assert fake.api_calls[0].path == "/crm/v8/actions/watch"


async def test_enable_watch_takes_a_lifetime_and_related_action_choice(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    await client.enable_watch(
        channel_id="42",
        events=["Contacts.create"],
        notify_url=NOTIFY_URL,
        token=WATCH_TOKEN,
        expiry=timedelta(days=1),
        notify_on_related_action=False,
    )

    channel = fake.channels["42"]
    assert channel.expiry == clock() + timedelta(days=1)
    assert channel.notify_on_related_action is False


async def test_renew_watch_moves_the_expiry_and_keeps_the_rest(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    await client.enable_watch(
        channel_id=7,
        events=["BTEC_Students.all"],
        notify_url=NOTIFY_URL,
        token=WATCH_TOKEN,
        expiry=timedelta(hours=20),
    )
    clock.advance(timedelta(hours=12))

    renewed = await client.renew_watch(
        channel_id=7, events=["BTEC_Students.all"], expiry=timedelta(days=7)
    )

    assert renewed[0].channel_expiry == clock() + timedelta(days=7)
    channel = fake.channels["7"]
    assert channel.expiry == clock() + timedelta(days=7)
    assert (channel.token, channel.notify_url) == (WATCH_TOKEN, NOTIFY_URL)
    assert fake.api_calls[-1].method == "PATCH"


async def test_renewing_an_unknown_channel_raises_zoho_rejected(client: ZohoClient) -> None:
    with pytest.raises(ZohoRejected) as raised:
        await client.renew_watch(channel_id=99, events=["Contacts.all"], expiry=timedelta(days=1))

    assert (raised.value.code, raised.value.status_code) == ("INVALID_DATA", 400)


async def test_watching_an_unknown_module_raises_zoho_rejected(client: ZohoClient) -> None:
    with pytest.raises(ZohoRejected, match="INVALID_DATA"):
        await client.enable_watch(
            channel_id=1,
            events=["Nope.all"],
            notify_url=NOTIFY_URL,
            token=WATCH_TOKEN,
            expiry=timedelta(hours=1),
        )


async def test_watch_token_over_50_characters_is_refused_without_showing_it(
    client: ZohoClient, fake: FakeZoho
) -> None:
    long_token = "x" * 40 + "-secret-tail"

    with pytest.raises(ValueError, match="52 characters long; Zoho accepts at most 50") as raised:
        await client.enable_watch(
            channel_id=1,
            events=["Contacts.all"],
            notify_url=NOTIFY_URL,
            token=long_token,
            expiry=timedelta(hours=1),
        )

    assert "secret-tail" not in str(raised.value)
    assert fake.calls == []


async def test_watch_token_of_exactly_50_characters_is_accepted(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.enable_watch(
        channel_id=1,
        events=["Contacts.all"],
        notify_url=NOTIFY_URL,
        token="t" * 50,
        expiry=timedelta(hours=1),
    )

    assert fake.channels["1"].token == "t" * 50


async def test_expiry_of_exactly_seven_days_is_accepted(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    await client.enable_watch(
        channel_id=1,
        events=["Contacts.all"],
        notify_url=NOTIFY_URL,
        token=WATCH_TOKEN,
        expiry=timedelta(days=7),
    )

    assert fake.channels["1"].expiry == clock() + timedelta(days=7)


@pytest.mark.parametrize(
    ("expiry", "message"),
    [
        (timedelta(days=7, seconds=1), "at most 7 days"),
        (timedelta(0), "in the future"),
        (timedelta(hours=-1), "in the future"),
        (datetime(2025, 6, 3, 9, 0), "timezone-aware"),
    ],
)
async def test_expiry_zoho_would_not_honour_is_refused_before_any_request(
    client: ZohoClient, fake: FakeZoho, expiry: datetime | timedelta, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await client.enable_watch(
            channel_id=1,
            events=["Contacts.all"],
            notify_url=NOTIFY_URL,
            token=WATCH_TOKEN,
            expiry=expiry,
        )
    with pytest.raises(ValueError, match=message):
        await client.renew_watch(channel_id=1, events=["Contacts.all"], expiry=expiry)

    assert fake.calls == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"events": []}, "non-empty"),
        ({"events": "Contacts.all"}, "non-empty list"),
        ({"events": ["Contacts.update"]}, "must look like"),
        ({"events": ["Contacts"]}, "must look like"),
        ({"channel_id": "abc"}, "channel_id"),
        ({"channel_id": -5}, "channel_id"),
        ({"channel_id": 2**63}, "64-bit"),
        ({"notify_url": "ftp://example.com/x"}, "notify_url"),
        ({"token": ""}, "must not be empty"),
    ],
)
async def test_malformed_watch_requests_are_refused_before_any_request(
    client: ZohoClient, fake: FakeZoho, changes: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "channel_id": 1,
        "events": ["Contacts.all"],
        "notify_url": NOTIFY_URL,
        "token": WATCH_TOKEN,
        "expiry": timedelta(hours=1),
        **changes,
    }

    with pytest.raises(ValueError, match=message):
        await client.enable_watch(**arguments)  # type: ignore[arg-type]

    assert fake.calls == []
