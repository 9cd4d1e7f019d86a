"""What a stored Zoho record becomes in Moodle: the per-tenant delivery policy, and pure functions
from a record's mapped data to the Moodle user, category, course or enrolment it should be.

No I/O here: the worker reads records and links, asks these functions what Moodle should hold,
and makes the calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zoho_moodle_sync.moodle.client import moodle_username

UserMatch = Literal["idnumber", "username", "email"]


class DeliveryPolicy(BaseModel):
    """A tenant's choices about Moodle; stored under `delivery` in its configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: str = "manual"
    """Moodle auth plugin of the users the service creates."""
    create_password: bool = True
    """New users get `createpassword=1` (Moodle mails them a password)."""
    suspend_statuses: tuple[str, ...] = ("Withdraw", "Blocked", "Freezed")
    """Student statuses whose Moodle account is suspended."""
    user_match: tuple[UserMatch, ...] = ("idnumber", "username", "email")
    """How an existing Moodle user is recognised before one is created, in order."""
    category_parent: int = Field(default=0, ge=0)
    """Moodle category under which programme categories are created (0 = top level)."""
    default_category: int = Field(default=1, ge=1)
    """Moodle category of classes that have no programme."""
    timezone: str = "UTC"
    """The college's time zone: class and enrolment dates are days there."""
    enrolment_dates: Literal["none", "zoho"] = "none"
    """`none`: enrolments have no start or end in Moodle, so access follows what Zoho says of
    the student and the enrolment, never the calendar. `zoho`: the enrolment's Start_Date and
    End_Date (plus `enrolment_grace_days`) become its Moodle times."""
    enrolment_grace_days: int = Field(default=30, ge=0, le=3650)
    """Days an enrolment stays active after its End_Date under `enrolment_dates: zoho`."""
    removal_policy: Literal["suspend", "unenrol", "keep"] = "suspend"
    mass_change_share: float = Field(default=0.10, gt=0, le=1)
    """Hold removals that would touch more than this share of the active enrolments or users."""
    mass_change_min: int = Field(default=5, ge=0)
    """Never hold fewer removals than this, however small the college."""
    mass_change_window_minutes: float = Field(default=60, ge=0)
    """Removals made within this many minutes count towards the guard as well."""
    student_role: str = "student"
    teacher_role: str = "editingteacher"
    roles: dict[str, int] = Field(
        default_factory=lambda: {"student": 5, "teacher": 4, "editingteacher": 3, "manager": 1}
    )
    """Role shortname → id on the tenant's Moodle (no web-service function lists roles; these
    are Moodle's install defaults)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _roles_known(self) -> DeliveryPolicy:
        missing = [r for r in (self.student_role, self.teacher_role) if r not in self.roles]
        if missing:
            raise ValueError(f"no role id configured for {', '.join(map(repr, missing))}")
        return self

    def role_id(self, shortname: str) -> int:
        try:
            return self.roles[shortname]
        except KeyError:
            raise ValueError(f"no role id configured for role {shortname!r}") from None

    def day_start(self, day: date | str | None) -> int:
        """Unix time of the start of `day` in the college's time zone; 0 when there is none."""
        if day is None:
            return 0
        if isinstance(day, str):
            day = date.fromisoformat(day)
        return int(datetime.combine(day, time(), ZoneInfo(self.timezone)).timestamp())

    def day_end(self, day: date | str | None) -> int:
        """Unix time of the end of `day` (the next midnight): an end date is inclusive."""
        if day is None:
            return 0
        if isinstance(day, str):
            day = date.fromisoformat(day)
        return self.day_start(day + timedelta(days=1))


class ProjectionError(ValueError):
    """The record cannot become a Moodle object as it stands (a data problem, not Moodle's)."""


@dataclass(frozen=True)
class UserShape:
    username: str
    email: str
    firstname: str
    lastname: str
    idnumber: str
    suspended: bool


@dataclass(frozen=True)
class CategoryShape:
    name: str
    idnumber: str
    parent: int


@dataclass(frozen=True)
class CourseShape:
    fullname: str
    shortname: str
    idnumber: str
    categoryid: int
    startdate: int
    enddate: int


@dataclass(frozen=True)
class EnrolmentTimes:
    timestart: int
    timeend: int


def student_user(zoho_id: str, data: dict[str, Any], policy: DeliveryPolicy) -> UserShape:
    email = data.get("academic_email") or data.get("email")
    if not email:
        raise ProjectionError("the student has neither Academic_Email nor Email")
    try:
        username = moodle_username(str(data["student_number"]))
    except ValueError as exc:
        raise ProjectionError(f"student number as Moodle username: {exc}") from None
    return UserShape(
        username=username,
        email=str(email),
        firstname=str(data["first_name"]),
        lastname=str(data["last_name"]),
        idnumber=zoho_id,
        suspended=data.get("status") in policy.suspend_statuses,
    )


def teacher_user(zoho_id: str, data: dict[str, Any], policy: DeliveryPolicy) -> UserShape:
    email = data.get("academic_email") or data.get("email")
    if not email:
        raise ProjectionError("the teacher has neither Academic_Email nor Email")
    try:
        username = moodle_username(str(email))
    except ValueError as exc:
        raise ProjectionError(f"e-mail as Moodle username: {exc}") from None
    firstname, lastname = split_name(str(data["name"]))
    return UserShape(
        username=username,
        email=str(email),
        firstname=firstname,
        lastname=lastname,
        idnumber=zoho_id,
        suspended=False,
    )


USER_SHAPES: dict[str, Callable[[str, dict[str, Any], DeliveryPolicy], UserShape]] = {
    "students": student_user,
    "teachers": teacher_user,
}
"""The Moodle user each user entity's record becomes."""


def split_name(name: str) -> tuple[str, str]:
    """ "Sarah O'Neill" → ("Sarah", "O'Neill"); "Ana Maria Lopez" → ("Ana Maria", "Lopez"); a
    single word is used for both, since Moodle requires both names."""
    parts = name.split()
    if len(parts) < 2:
        return name.strip(), name.strip()
    return " ".join(parts[:-1]), parts[-1]


def program_category(zoho_id: str, data: dict[str, Any], policy: DeliveryPolicy) -> CategoryShape:
    return CategoryShape(name=str(data["name"]), idnumber=zoho_id, parent=policy.category_parent)


def class_course(
    zoho_id: str, data: dict[str, Any], category_id: int, policy: DeliveryPolicy
) -> CourseShape:
    """The course follows the class's dates (they do not limit anyone's access in Moodle); an
    end before the start, which Moodle refuses, is left out (the record carries a warning)."""
    return CourseShape(
        fullname=str(data["class_name"]),
        shortname=str(data.get("short_name") or data["class_name"]),
        idnumber=zoho_id,
        categoryid=category_id,
        startdate=policy.day_start(data.get("start_date")),
        enddate=policy.day_end(_end_date(data)),
    )


def enrolment_times(data: dict[str, Any], policy: DeliveryPolicy) -> EnrolmentTimes:
    """No limits unless the tenant asks for Zoho's dates; then the end date (inclusive) plus
    the grace days, and no end at all when the end is before the start."""
    if policy.enrolment_dates == "none":
        return EnrolmentTimes(timestart=0, timeend=0)
    end = _end_date(data)
    grace = timedelta(days=policy.enrolment_grace_days)
    last_day = None if end is None else date.fromisoformat(end) + grace
    return EnrolmentTimes(
        timestart=policy.day_start(data.get("start_date")), timeend=policy.day_end(last_day)
    )


def enrolment_dates_changed(before: DeliveryPolicy, after: DeliveryPolicy) -> bool:
    """Whether enrolments delivered under `before` get other Moodle times under `after`."""
    if before.enrolment_dates != after.enrolment_dates:
        return True
    return after.enrolment_dates == "zoho" and (
        before.enrolment_grace_days != after.enrolment_grace_days
        or before.timezone != after.timezone
    )


def _end_date(data: dict[str, Any]) -> str | None:
    """The record's end date, unless it is before its start date."""
    start, end = data.get("start_date"), data.get("end_date")
    return None if start and end and end < start else end
