"""The shape of an explain answer: one verdict in plain words, then the facts behind it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

Status = Literal[
    "in_moodle",
    "suspended",
    "removed",
    "on_its_way",
    "waiting",
    "held",
    "refused",
    "invalid",
    "deleted",
    "not_for_moodle",
    "not_sent",
]
"""Where the record stands, in one word: in Moodle (active, suspended, removed by the removal
policy), on its way (a delivery is queued), waiting (parked, or its delivery waits for another
record), held (mass-change guard), refused (Moodle or the service refused its delivery),
invalid (Zoho's last version could not be stored), deleted in Zoho, not for Moodle (kept for
reporting), not sent (stored, no delivery yet)."""


class Received(BaseModel):
    """The version of the record the service holds, and how it came."""

    event_id: int | None = Field(description="The inbound event that brought it")
    at: datetime | None = Field(description="When that event arrived")
    source: str | None = Field(description="sync, webhook, pull, catch_up or replay")
    route: str | None = Field(description="The route it reached, e.g. POST /v1/webhooks/zoho")
    how: str = Field(description="How it came, in words")
    zoho_modified_time: datetime | None = Field(description="Zoho's Modified_Time of it")


class OutcomeLine(BaseModel):
    """One arrival of the record (UNCHANGED arrivals leave no line)."""

    outcome: str
    at: datetime
    event_id: int | None
    source: str | None = None
    message: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class RecordState(BaseModel):
    state: Literal["stored", "parked", "not_stored", "deleted"]
    received: Received | None
    last_outcome: OutcomeLine | None
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, description="Values left out of the stored version"
    )
    deleted_at: datetime | None = None
    history: list[OutcomeLine] = Field(default_factory=list, description="Newest first")


class Dependency(BaseModel):
    """A record this one waits for."""

    entity: str
    zoho_id: str
    field: str = Field(description="The lookup field naming it")
    state: Literal["never_arrived", "invalid", "parked", "stored"]
    words: str
    errors: list[dict[str, str]] = Field(
        default_factory=list, description="Why its last version was refused, when invalid"
    )


class JobLine(BaseModel):
    """One delivery job of the record, newest first."""

    id: int
    action: str | None
    state: str
    attempts: int
    errorcode: str | None
    error: str | None = Field(description="What went wrong, in words (Moodle's message)")
    wait_reason: str | None
    due_at: datetime
    created_at: datetime
    finished_at: datetime | None


class MoodleSide(BaseModel):
    """What the record became in Moodle, as the service last made it."""

    kind: Literal["user", "category", "course", "enrolment"]
    id: int | None = Field(description="The Moodle user, category or course id")
    state: str = Field(description="active, suspended or removed")
    adopted: bool = Field(description="It existed in Moodle before the service")
    detail: dict[str, Any] = Field(default_factory=dict)
    delivered_at: datetime


class Delivery(BaseModel):
    moodle: MoodleSide | None
    jobs: list[JobLine]
    paused: str | None = Field(description="Why the tenant's delivery is paused, if it is")
    moodle_configured: bool


class Related(BaseModel):
    """A record this one points to (an enrolment's student and class), and where it stands."""

    role: str = Field(description="The lookup field: student_zoho_id, class_zoho_id, ...")
    entity: str
    zoho_id: str
    name: str
    status: Status | Literal["unknown"]
    verdict: str


class Live(BaseModel):
    """What Moodle shows now (`?live=1`)."""

    checked_at: datetime
    error: str | None = Field(description="Why Moodle could not be asked, if it could not")
    facts: list[str] = Field(default_factory=list, description="What Moodle holds, in words")
    user: dict[str, Any] | None = None
    course: dict[str, Any] | None = None
    category: dict[str, Any] | None = None
    enrolment: dict[str, Any] | None = None


class Explanation(BaseModel):
    """Why a record is, or is not, in Moodle as Zoho has it."""

    entity: str
    zoho_id: str
    name: str = Field(description="What a person recognises: a student number, a class name")
    verdict: str = Field(description="The answer, in one sentence")
    status: Status
    record: RecordState
    waiting_for: list[Dependency] = Field(default_factory=list)
    delivery: Delivery | None = Field(description="None for entities that do not go to Moodle")
    related: list[Related] = Field(default_factory=list)
    live: Live | None = None
    _moodle_ids: dict[str, int | None] = PrivateAttr(default_factory=dict)
    """What to ask Moodle about for `live`: `user`, `course`, `category` (their Moodle ids,
    None when the service has none yet) and `enrolment`."""


class Match(BaseModel):
    entity: str
    zoho_id: str
    name: str
    matched: str = Field(description="What matched: zoho_id, student_number or email")


class Search(BaseModel):
    """`?q=`: every record that matches, and the explanation when exactly one does."""

    query: str
    matches: list[Match]
    explanation: Explanation | None
