"""The typed domain records the service stores: one Pydantic model per Zoho entity.

Each field is annotated with `Zoho(...)`: the BTEC org's default api name for the field, and for
lookups the entity they point to and whether that entity must be stored first. The mapper fills
these models from Zoho records; the database tables are built from the same annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from zoho_moodle_sync.zoho.ids import is_zoho_id


@dataclass(frozen=True)
class Zoho:
    """Where a domain field comes from in the BTEC org, and what it refers to."""

    api_name: str
    lookup: str | None = None
    """The entity key a lookup points to (its value is that record's Zoho id)."""
    required_first: bool = False
    """When set, the referenced record must be stored before this one (a dependency)."""
    max_length: int = 255


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Moodle's validate_email accepts roughly this; stricter checks belong to Moodle.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# Amounts are stored as NUMERIC(18, 4): refuse what the column would round or overflow.
_AMOUNT_DECIMALS = 4
_AMOUNT_DIGITS = 14
_AMOUNT_STEP = Decimal(1).scaleb(-_AMOUNT_DECIMALS)
_AMOUNT_LIMIT = Decimal(10) ** _AMOUNT_DIGITS


def _text(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _picklist(value: Any) -> Any:
    value = _text(value)
    return None if value == "-None-" else value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


def _zoho_date(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a calendar date: {value!r}") from None


def _zoho_datetime(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date-time with offset, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without a UTC offset: {value!r}")
    return parsed


def _zoho_decimal(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    if abs(number) >= _AMOUNT_LIMIT:
        raise ValueError(f"too large: {value!r} (at most {_AMOUNT_DIGITS} digits before the point)")
    if number != number.quantize(_AMOUNT_STEP, rounding=ROUND_DOWN):
        raise ValueError(f"more than {_AMOUNT_DECIMALS} decimal places: {value!r}")
    # 5900, 5900.0 and "5900.00" are one amount: keep one spelling so fingerprints agree.
    return Decimal(format(number.normalize(), "f"))


def _lookup_id(value: Any) -> Any:
    """A lookup arrives as {"name", "id"}; a bare id is accepted too (webhook merge fields)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        return None
    if not is_zoho_id(value):
        raise ValueError(
            f"expected a Zoho record id (digits) or a lookup {{name, id}}, got {value!r}"
        )
    return value


Text = Annotated[str | None, BeforeValidator(_text)]
Picklist = Annotated[str | None, BeforeValidator(_picklist)]
Email = Annotated[str | None, BeforeValidator(_text), AfterValidator(lambda v: v and _email(v))]
Day = Annotated[date | None, BeforeValidator(_zoho_date)]
Moment = Annotated[datetime | None, BeforeValidator(_zoho_datetime)]
Amount = Annotated[Decimal | None, BeforeValidator(_zoho_decimal)]
Count = Annotated[int | None, Field(ge=-(2**31), le=2**31 - 1)]
"""A whole number that fits the 32-bit INTEGER column."""
LookupId = Annotated[str | None, BeforeValidator(_lookup_id)]
RequiredText = Annotated[str, BeforeValidator(_text)]
RequiredLookupId = Annotated[str, BeforeValidator(_lookup_id)]


class RuleViolation(ValueError):
    """A rule across fields; `field` names the domain field to blame in the error report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DomainRecord(BaseModel):
    """Base of every entity's domain record: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    periods: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(start field, end field) pairs: an end before its start is a warning, never a refusal
    (the dates are shown in Moodle; nobody needs them to be enrolled)."""


class StudentRecord(DomainRecord):
    student_number: Annotated[RequiredText, Zoho("Name", max_length=120)]
    first_name: Annotated[RequiredText, Zoho("First_Name")]
    last_name: Annotated[RequiredText, Zoho("Last_Name")]
    email: Annotated[Email, Zoho("Email", max_length=100)] = None
    academic_email: Annotated[Email, Zoho("Academic_Email", max_length=100)] = None
    status: Annotated[Picklist, Zoho("Status", max_length=120)] = None
    phone: Annotated[Text, Zoho("Phone_Number", max_length=50)] = None
    birth_date: Annotated[Day, Zoho("Birth_Date")] = None
    registration_date: Annotated[Day, Zoho("Registration_Date")] = None
    academic_program: Annotated[Picklist, Zoho("Academic_Program", max_length=120)] = None
    major: Annotated[Picklist, Zoho("Major", max_length=120)] = None
    study_mode: Annotated[Picklist, Zoho("Study_Mode", max_length=120)] = None
    program_zoho_id: Annotated[LookupId, Zoho("Program", lookup="programs", max_length=32)] = None

    @model_validator(mode="after")
    def _needs_an_email(self) -> StudentRecord:
        if not (self.academic_email or self.email):
            raise RuleViolation(
                "academic_email", "a student needs Academic_Email or Email (Moodle requires one)"
            )
        return self


class TeacherRecord(DomainRecord):
    name: Annotated[RequiredText, Zoho("Name", max_length=120)]
    email: Annotated[Email, Zoho("Email", max_length=100)] = None
    academic_email: Annotated[Email, Zoho("Academic_Email", max_length=100)] = None
    phone: Annotated[Text, Zoho("Phone_Number", max_length=50)] = None

    @model_validator(mode="after")
    def _needs_an_email(self) -> TeacherRecord:
        if not (self.academic_email or self.email):
            raise RuleViolation(
                "academic_email", "a teacher needs Academic_Email or Email (Moodle requires one)"
            )
        return self


class ProgramRecord(DomainRecord):
    name: Annotated[RequiredText, Zoho("Product_Name")]
    program_code: Annotated[Text, Zoho("Program_ID", max_length=120)] = None
    status: Annotated[Picklist, Zoho("Status", max_length=120)] = None
    major: Annotated[Picklist, Zoho("Program_Major", max_length=120)] = None
    program_type: Annotated[Picklist, Zoho("Program_Type", max_length=120)] = None
    price: Annotated[Amount, Zoho("Program_Price")] = None


class UnitRecord(DomainRecord):
    name: Annotated[RequiredText, Zoho("Name")]
    unit_code: Annotated[Text, Zoho("Unit_Code", max_length=120)] = None
    unit_number: Annotated[Text, Zoho("Unit_Number", max_length=120)] = None
    level: Annotated[Picklist, Zoho("Unit_Level", max_length=120)] = None
    major: Annotated[Picklist, Zoho("Unit_Major", max_length=120)] = None
    credit: Annotated[Text, Zoho("Unit_Credit", max_length=120)] = None
    program_zoho_id: Annotated[
        LookupId, Zoho("Program", lookup="programs", required_first=True, max_length=32)
    ] = None


class ClassRecord(DomainRecord):
    class_code: Annotated[Text, Zoho("Name", max_length=120)] = None
    class_name: Annotated[RequiredText, Zoho("Class_Name")]
    short_name: Annotated[Text, Zoho("Class_Short_Name")] = None
    status: Annotated[Picklist, Zoho("Class_Status", max_length=120)] = None
    term: Annotated[Picklist, Zoho("Term", max_length=120)] = None
    year: Annotated[Text, Zoho("Year", max_length=20)] = None
    study_mode: Annotated[Picklist, Zoho("Class_Study_Mode", max_length=120)] = None
    start_date: Annotated[Day, Zoho("Start_Date")] = None
    end_date: Annotated[Day, Zoho("End_Date")] = None
    program_zoho_id: Annotated[
        LookupId, Zoho("BTEC_Program", lookup="programs", required_first=True, max_length=32)
    ] = None
    teacher_zoho_id: Annotated[
        LookupId, Zoho("Teacher", lookup="teachers", required_first=True, max_length=32)
    ] = None
    unit_zoho_id: Annotated[
        LookupId, Zoho("Unit", lookup="units", required_first=True, max_length=32)
    ] = None

    periods: ClassVar[tuple[tuple[str, str], ...]] = (("start_date", "end_date"),)


class EnrollmentRecord(DomainRecord):
    enrollment_code: Annotated[Text, Zoho("Name", max_length=120)] = None
    student_zoho_id: Annotated[
        RequiredLookupId,
        Zoho("Enrolled_Students", lookup="students", required_first=True, max_length=32),
    ]
    class_zoho_id: Annotated[
        RequiredLookupId, Zoho("Classes", lookup="classes", required_first=True, max_length=32)
    ]
    start_date: Annotated[Day, Zoho("Start_Date")] = None
    end_date: Annotated[Day, Zoho("End_Date")] = None
    enrollment_type: Annotated[Picklist, Zoho("Enrollment_Type", max_length=120)] = None

    periods: ClassVar[tuple[tuple[str, str], ...]] = (("start_date", "end_date"),)


class RegistrationRecord(DomainRecord):
    registration_code: Annotated[Text, Zoho("Name", max_length=120)] = None
    student_zoho_id: Annotated[
        RequiredLookupId, Zoho("Student_ID", lookup="students", required_first=True, max_length=32)
    ]
    program_zoho_id: Annotated[
        RequiredLookupId, Zoho("Program", lookup="programs", required_first=True, max_length=32)
    ]
    status: Annotated[Picklist, Zoho("Registration_Status", max_length=120)] = None
    registration_date: Annotated[Day, Zoho("Registration_Date")] = None
    study_mode: Annotated[Picklist, Zoho("Study_Mode", max_length=120)] = None
    intake: Annotated[Text, Zoho("Intake", max_length=120)] = None


class PaymentRecord(DomainRecord):
    payment_code: Annotated[Text, Zoho("Name", max_length=120)] = None
    registration_zoho_id: Annotated[
        RequiredLookupId,
        Zoho("Registration_ID", lookup="registrations", required_first=True, max_length=32),
    ]
    student_zoho_id: Annotated[LookupId, Zoho("Student_ID", lookup="students", max_length=32)] = (
        None
    )
    amount: Annotated[Amount, Zoho("Payment_Amount")] = None
    payment_date: Annotated[Day, Zoho("Payment_Date")] = None
    method: Annotated[Picklist, Zoho("Payment_Method", max_length=120)] = None
    payment_type: Annotated[Picklist, Zoho("Payment_Type", max_length=120)] = None
    installment_no: Annotated[Count, Zoho("Installment_No")] = None


class GradeRecord(DomainRecord):
    grade_code: Annotated[Text, Zoho("Name", max_length=120)] = None
    student_zoho_id: Annotated[
        RequiredLookupId, Zoho("Student", lookup="students", required_first=True, max_length=32)
    ]
    class_zoho_id: Annotated[
        RequiredLookupId, Zoho("Class", lookup="classes", required_first=True, max_length=32)
    ]
    grade: Annotated[Picklist, Zoho("Grade", max_length=120)] = None
    grade_status: Annotated[Picklist, Zoho("Grade_Status", max_length=120)] = None
    attempt_number: Annotated[Count, Zoho("Attempt_Number")] = None
    attempt_date: Annotated[Day, Zoho("Attempt_Date")] = None
    unit_name: Annotated[Text, Zoho("BTEC_Unit")] = None
    feedback: Annotated[Text, Zoho("Feedback", max_length=32000)] = None
