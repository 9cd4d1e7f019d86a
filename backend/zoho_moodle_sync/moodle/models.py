"""Typed requests and replies of the Moodle 4.5 web-service functions the sync calls.

Request fields left None are not sent; names in replies stay HTML-escaped as Moodle sends them.
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# Moodle's install defaults; a site may differ, so callers take role ids from configuration.
DEFAULT_ROLE_IDS: dict[str, int] = {"manager": 1, "editingteacher": 3, "teacher": 4, "student": 5}

UserField = Literal["id", "idnumber", "username", "email"]
CourseField = Literal["id", "ids", "shortname", "idnumber", "category", "sectionid"]
CategoryKey = Literal["id", "ids", "name", "parent", "idnumber", "visible", "theme"]


def unescape_moodle_text(value: str) -> str:
    """`value` with the HTML escaping Moodle applies to names on read-back undone."""
    return html.unescape(value)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# ---- requests ------------------------------------------------------------------------------


class CustomField(_Request):
    """A user profile field value, by the field's shortname."""

    type: str
    value: str


class Preference(_Request):
    type: str
    value: str


class _UserFields(_Request):
    """The user fields core_user_create_users and core_user_update_users share; None is not
    sent."""

    username: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    email: str | None = None
    password: SecretStr | None = None
    auth: str | None = None
    idnumber: str | None = None
    lang: str | None = None
    calendartype: str | None = None
    maildisplay: int | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None
    description: str | None = None
    firstnamephonetic: str | None = None
    lastnamephonetic: str | None = None
    middlename: str | None = None
    alternatename: str | None = None
    interests: str | None = None
    institution: str | None = None
    department: str | None = None
    phone1: str | None = None
    phone2: str | None = None
    address: str | None = None
    theme: str | None = None
    mailformat: int | None = None
    customfields: list[CustomField] | None = None
    preferences: list[Preference] | None = None


class NewUser(_UserFields):
    """One user for core_user_create_users (there is no `suspended` on create)."""

    username: str
    firstname: str
    lastname: str
    email: str
    createpassword: bool | None = None


class UserUpdate(_UserFields):
    """Changes to one user for core_user_update_users; fields left None stay as they are."""

    id: int
    suspended: bool | None = None
    userpicture: int | None = None


class NewCategory(_Request):
    name: str
    parent: int | None = None
    idnumber: str | None = None
    description: str | None = None
    descriptionformat: int | None = None
    theme: str | None = None


class CategoryUpdate(_Request):
    id: int
    name: str | None = None
    idnumber: str | None = None
    parent: int | None = None
    description: str | None = None
    descriptionformat: int | None = None
    theme: str | None = None


class CategoryCriterion(_Request):
    """One search criterion for core_course_get_categories (criteria are AND-ed)."""

    key: CategoryKey
    value: str


class CourseFormatOption(_Request):
    name: str
    value: str


class CourseCustomField(_Request):
    shortname: str
    value: str


class _CourseFields(_Request):
    idnumber: str | None = None
    summary: str | None = None
    summaryformat: int | None = None
    format: str | None = None
    showgrades: int | None = None
    newsitems: int | None = None
    startdate: int | None = None
    enddate: int | None = None
    numsections: int | None = None
    maxbytes: int | None = None
    showreports: int | None = None
    visible: int | None = None
    hiddensections: int | None = None
    groupmode: int | None = None
    groupmodeforce: int | None = None
    defaultgroupingid: int | None = None
    enablecompletion: int | None = None
    completionnotify: int | None = None
    lang: str | None = None
    forcetheme: str | None = None
    courseformatoptions: list[CourseFormatOption] | None = None
    customfields: list[CourseCustomField] | None = None


class NewCourse(_CourseFields):
    fullname: str
    shortname: str
    categoryid: int


class CourseUpdate(_CourseFields):
    id: int
    fullname: str | None = None
    shortname: str | None = None
    categoryid: int | None = None


class Enrolment(_Request):
    """A manual enrolment. Send `suspend` explicitly: leaving it out reactivates a suspended one."""

    roleid: int
    userid: int
    courseid: int
    timestart: int | None = None
    timeend: int | None = None
    suspend: bool | None = None


class Unenrolment(_Request):
    """Removes the manual enrolment, or with `roleid` only that role."""

    userid: int
    courseid: int
    roleid: int | None = None


# ---- replies -------------------------------------------------------------------------------


class SiteFunction(_Reply):
    name: str
    version: str


class SiteInfo(_Reply):
    sitename: str
    username: str
    firstname: str
    lastname: str
    fullname: str
    lang: str
    userid: int
    siteurl: str
    functions: list[SiteFunction] = Field(default_factory=list)
    release: str | None = None
    version: str | None = None
    siteid: int | None = None
    userissiteadmin: bool | None = None

    @property
    def function_names(self) -> frozenset[str]:
        """The functions this token may call."""
        return frozenset(function.name for function in self.functions)


class MoodleWarning(_Reply):
    """A per-item problem reported instead of an exception (the other items went through)."""

    item: str | None = None
    itemid: int | None = None
    warningcode: str
    message: str


class WarningsReply(_Reply):
    warnings: list[MoodleWarning] = Field(default_factory=list)


class CreatedUser(_Reply):
    id: int
    username: str


class UserCustomFieldValue(_Reply):
    type: str
    value: str
    name: str
    shortname: str
    displayvalue: str | None = None


class MoodleUser(_Reply):
    """A user as core_user_get_users_by_field returns it; absent fields stay None."""

    id: int
    username: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    fullname: str
    email: str | None = None
    idnumber: str | None = None
    department: str | None = None
    institution: str | None = None
    auth: str | None = None
    suspended: bool | None = None
    confirmed: bool | None = None
    lang: str | None = None
    timezone: str | None = None
    city: str | None = None
    country: str | None = None
    description: str | None = None
    customfields: list[UserCustomFieldValue] = Field(default_factory=list)


class CreatedCategory(_Reply):
    id: int
    name: str


class Category(_Reply):
    id: int
    name: str
    idnumber: str | None = None
    description: str
    descriptionformat: int
    parent: int
    sortorder: int
    coursecount: int
    visible: int | None = None
    timemodified: int | None = None
    depth: int
    path: str


class CreatedCourse(_Reply):
    id: int
    shortname: str


class CourseContact(_Reply):
    id: int
    fullname: str


class Course(_Reply):
    """A course as core_course_get_courses_by_field returns it (names HTML-escaped)."""

    id: int
    fullname: str
    displayname: str
    shortname: str
    categoryid: int
    categoryname: str
    summary: str
    summaryformat: int
    idnumber: str | None = None
    format: str | None = None
    startdate: int | None = None
    enddate: int | None = None
    visible: int | None = None
    lang: str | None = None
    timemodified: int | None = None
    enrollmentmethods: list[str] = Field(default_factory=list)
    contacts: list[CourseContact] = Field(default_factory=list)

    @property
    def has_manual_enrolment(self) -> bool:
        """Whether enrol_manual_enrol_users can enrol into this course."""
        return "manual" in self.enrollmentmethods


class CoursesReply(_Reply):
    courses: list[Course]
    warnings: list[MoodleWarning] = Field(default_factory=list)


class EnrolledRole(_Reply):
    roleid: int
    name: str
    shortname: str
    sortorder: int


class EnrolledCourse(_Reply):
    id: int
    fullname: str
    shortname: str


class EnrolledUser(_Reply):
    """A user enrolled in a course; active and suspended enrolments look the same here."""

    id: int
    username: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    fullname: str
    email: str | None = None
    idnumber: str | None = None
    roles: list[EnrolledRole] = Field(default_factory=list)
    enrolledcourses: list[EnrolledCourse] = Field(default_factory=list)

    @property
    def role_ids(self) -> frozenset[int]:
        return frozenset(role.roleid for role in self.roles)
