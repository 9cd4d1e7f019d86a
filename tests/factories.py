"""Zoho CRM records in the exact shape Zoho's REST API returns them (GET /crm/v2/{module}).

The field lists come from the real field metadata of a BTEC college's Zoho org
(`tests/data/zoho_fields.json`): every record carries every field of its module, most of
them null, plus the keys Zoho adds itself (`id`, `Created_By`, `$approved`, `$state`, ...).
Picklist fields hold the picklist's *actual* values, which are not always what Zoho's UI
shows (Students' Status "Freezed" is shown as "Freeze", Products' Status "Approved" as
"Disbaled"...). See `tests/data/sample-college-records.json` for a whole small college.

    StudentRecordFactory()                                  # a student with a program lookup
    StudentRecordFactory(Status="Withdraw", locale="ar_SA") # Arabic name, withdrawn
    EnrollmentRecordFactory(student=s, class_=c)            # lookups point at s and c
    StudentRecordFactory(Program=None)                      # any API field can be overridden
    StudentRecordFactory(**{"$approval_state": "approval_process_pending"})
    college = build_college(students=20, seed=7)            # module -> records, lookups resolve

Related records are given as parameters (`program`, `unit`, `teacher`, `student`, `class_`,
`registration`), each a record dict; by default a fresh one is built. A lookup field is set
from such a record with `lookup(record)`; to null a lookup, pass the API field itself
(`Teacher=None`).

Everything is deterministic under factory-boy's random seed (`factory.random.reseed_random`):
names, dates and choices come from factory-boy's and Faker's shared random generator, ids
from one sequence shared by all the factories here (`ZohoRecordFactory.reset_sequence`).
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import factory
import factory.random
from faker import Faker

Record = dict[str, Any]

DATA_DIR = Path(__file__).parent / "data"

PROGRAMS = "Products"
UNITS = "BTEC"
TEACHERS = "BTEC_Teachers"
STUDENTS = "BTEC_Students"
CLASSES = "BTEC_Classes"
ENROLLMENTS = "BTEC_Enrollments"
REGISTRATIONS = "BTEC_Registrations"
PAYMENTS = "BTEC_Payments"
GRADES = "BTEC_Grades"
MODULES = (
    PROGRAMS,
    UNITS,
    TEACHERS,
    STUDENTS,
    CLASSES,
    ENROLLMENTS,
    REGISTRATIONS,
    PAYMENTS,
    GRADES,
)

#: module -> [{"api_name", "data_type", "picklist"?, "lookup_module"?}, ...], in Zoho's order
ZOHO_FIELDS: dict[str, list[dict[str, Any]]] = json.loads(
    (DATA_DIR / "zoho_fields.json").read_text(encoding="utf-8")
)

# ---------------------------------------------------------------------------------------------
# The shape of a record
# ---------------------------------------------------------------------------------------------

#: Keys every record of the API has, added after the metadata's fields when it lacks them.
RECORD_KEYS = ("Created_By", "Modified_By", "Created_Time", "Modified_Time", "Tag")

#: Zoho's `$` keys on every record, with the values an ordinary saved record has.
META_KEYS: dict[str, Any] = {
    "$approved": True,
    "$editable": True,
    "$in_merge": False,
    "$process_flow": False,
    "$locked_for_me": False,
    "$orchestration": False,
    "$approval_state": "approved",
    "$state": "save",
    "$review": None,
    "$field_states": None,
    "$approval": {
        "delegate": False,
        "takeover": False,
        "approve": False,
        "reject": False,
        "resubmit": False,
    },
}

#: Modules whose records also carry the `$layout_id` of their (several) layouts.
LAYOUT_MODULES = frozenset({STUDENTS})
STANDARD_LAYOUT = {"name": "Standard", "id": "5725767141565000002"}

CURRENCY_SYMBOLS = {"USD": "$", "TRY": "₺", "EUR": "€", "GBP": "£"}

#: The org's users, who own and edit records: {name, id, email} as in Owner/Created_By.
USERS: tuple[dict[str, str], ...] = (
    {
        "name": "Reem Admissions",
        "id": "5725767141565000001",
        "email": "reem.admissions@college.example",
    },
    {"name": "Zoho Admin", "id": "5725767141565000002", "email": "admin@college.example"},
    {
        "name": "Bilal Registrar",
        "id": "5725767141565000003",
        "email": "bilal.registrar@college.example",
    },
)

#: Record ids are 19-digit strings; ours start here (the sample file's are below it).
ZOHO_ID_BASE = 5_725_767_141_570_000_000
#: build_college(seed=s) numbers its records from ZOHO_ID_BASE + (1000 + s % 9000) * this
COLLEGE_ID_BLOCK = 1_000_000

ZOHO_TZ = dt.timezone(dt.timedelta(hours=3))  # the org's time zone (Europe/Istanbul)
INTAKE = "MS0PSZ"  # the intake code in the college's autonumbers


def fields(module: str) -> list[dict[str, Any]]:
    """The module's fields from the metadata, in Zoho's order."""
    return ZOHO_FIELDS[module]


def field_names(module: str) -> list[str]:
    return [f["api_name"] for f in ZOHO_FIELDS[module]]


def picklist(module: str, field: str) -> list[str]:
    """The picklist's actual values, without Zoho's "-None-" placeholder."""
    for f in ZOHO_FIELDS[module]:
        if f["api_name"] == field:
            return [v for v in f["picklist"] if v != "-None-"]
    raise KeyError(f"{module} has no field {field}")


def system_keys(module: str) -> list[str]:
    """Keys of the module's records that are not among its metadata's fields, in API order."""
    names = set(field_names(module))
    keys = ["id", *(k for k in RECORD_KEYS if k not in names), *META_KEYS]
    if "Currency" in names:
        keys.append("$currency_symbol")
        if "Exchange_Rate" not in names:
            keys.append("Exchange_Rate")
    if module in LAYOUT_MODULES:
        keys.append("$layout_id")
    return keys


def record_keys(module: str) -> list[str]:
    """Every key of a record of the module as the API returns it, in order."""
    return field_names(module) + system_keys(module)


def empty_value(field: dict[str, Any]) -> Any:
    """What the API returns for a field nobody filled in."""
    if field["data_type"] == "boolean":
        return False
    if field["api_name"] == "Tag":
        return []
    return None


def zoho_record(module: str, values: dict[str, Any]) -> Record:
    """A record of `module` with every key the API returns; `values` fill some of them.

    Keys of `values` that the module does not have are kept, at the end: a test can give a
    record a field the metadata does not know.
    """
    values = dict(values)
    record: Record = {}
    for f in ZOHO_FIELDS[module]:
        name = f["api_name"]
        record[name] = values.pop(name) if name in values else empty_value(f)
    record["id"] = values.pop("id")
    for key in RECORD_KEYS:
        if key not in record:
            record[key] = values.pop(key) if key in values else ([] if key == "Tag" else None)
    for key, default in META_KEYS.items():
        record[key] = values.pop(key) if key in values else _copy(default)
    if "Currency" in record:
        record["$currency_symbol"] = values.pop(
            "$currency_symbol", CURRENCY_SYMBOLS.get(record["Currency"] or "USD")
        )
        if "Exchange_Rate" not in record:
            record["Exchange_Rate"] = values.pop("Exchange_Rate", 1)
    if module in LAYOUT_MODULES:
        record["$layout_id"] = values.pop("$layout_id", dict(STANDARD_LAYOUT))
    record.update(values)
    return record


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, dict | list) else value


def lookup(record: Record | None, name_field: str | None = None) -> dict[str, str] | None:
    """The lookup value {"name", "id"} pointing at `record` (None for None).

    The name is the looked-up module's display field: Product_Name for programs, Class_Name
    for classes, Name for the others (as in Zoho's API).
    """
    if record is None:
        return None
    if name_field is None:
        if "Product_Name" in record:
            name_field = "Product_Name"
        elif "Class_Short_Name" in record:
            name_field = "Class_Name"
        else:
            name_field = "Name"
    return {"name": record[name_field], "id": record["id"]}


def zoho_id(n: int) -> str:
    return str(ZOHO_ID_BASE + n)


def _num(n: int) -> int:
    """The record's number in autonumbers ("ENR-MS0PSZ-000085"): its place in its id block."""
    return n % COLLEGE_ID_BLOCK


def zoho_datetime(value: dt.datetime) -> str:
    """Zoho's datetime format: ISO 8601 to the second, with the org's offset (+03:00)."""
    return value.astimezone(ZOHO_TZ).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------------------------
# Random but reproducible values
# ---------------------------------------------------------------------------------------------


def _rng() -> Any:
    return factory.random.randgen


def _choice(options: tuple[Any, ...] | list[Any]) -> Any:
    return _rng().choice(options)


def _random_date(start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=_rng().randint(0, (end - start).days))


def _random_datetime(start: dt.datetime, end: dt.datetime) -> str:
    seconds = _rng().randint(0, int((end - start).total_seconds()))
    return zoho_datetime(start + dt.timedelta(seconds=seconds))


def _later(zoho_time: str | None, max_hours: int) -> str | None:
    if zoho_time is None:
        return None
    start = dt.datetime.fromisoformat(zoho_time)
    return zoho_datetime(start + dt.timedelta(seconds=_rng().randint(0, max_hours * 3600)))


def _created_time() -> str:
    return _random_datetime(
        dt.datetime(2025, 5, 1, 8, 0, tzinfo=ZOHO_TZ),
        dt.datetime(2025, 6, 30, 18, 0, tzinfo=ZOHO_TZ),
    )


def _phone() -> str:
    r = _rng()
    return f"+90 5{r.randint(30, 59)} {r.randint(100, 999)} {r.randint(1000, 9999)}"


#: Faker locales for people's names: mostly English, now and then Arabic or Turkish script.
NAME_LOCALES = ("en_GB", "ar_SA", "tr_TR")
NAME_LOCALE_WEIGHTS = (6, 1, 1)


def _random_locale() -> str:
    return str(_rng().choices(NAME_LOCALES, weights=NAME_LOCALE_WEIGHTS)[0])


@cache
def _faker(locale: str) -> Faker:
    # No seed_instance: every Faker draws from Faker's shared generator, which
    # factory.random.reseed_random() reseeds together with factory-boy's.
    return Faker(locale)


def _first_name(locale: str, gender: str | None) -> str:
    fake = _faker(locale)
    if gender == "Male":
        return str(fake.first_name_male())
    if gender == "Female":
        return str(fake.first_name_female())
    return str(fake.first_name())


def _slug(text: str) -> str:
    """ASCII for an e-mail's local part: "Şükrü Öztürk" -> "sukru.ozturk", "O'Neill" -> "oneill"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = ["".join(c for c in w if c.isalnum()) for w in ascii_text.lower().split()]
    return ".".join(w for w in words if w) or "x"


NATIONALITIES = {
    "en_GB": ("United Kingdom", "Jordan", "Egypt", "Lebanon", "Iraq"),
    "ar_SA": ("Syria", "Saudi Arabia", "Yemen", "Palestine", "Libya"),
    "tr_TR": ("Turkey",),
}
CITIES = ("Istanbul", "Ankara", "Gaziantep", "Izmir", "Bursa")

#: Program majors (Products.Program_Major) and what they imply elsewhere.
MAJORS = ("IT", "Business")
MAJOR_TITLES = {"IT": "Computing", "Business": "Business", "Art & Design": "Art & Design"}
UNIT_MAJORS = {"IT": "IT", "Business": "BUS", "Art & Design": "AD"}  # BTEC.Unit_Major
STUDENT_MAJORS = {"IT": "Computing", "Business": "Business", "Art & Design": "Art & Design"}

#: Pearson HND units by program major: (title, unit code).
UNIT_CATALOG: dict[str, tuple[tuple[str, str], ...]] = {
    "IT": (
        ("Programming", "D/618/7388"),
        ("Networking", "H/618/7389"),
        ("Professional Practice", "K/618/7390"),
        ("Database Design & Development", "M/618/7391"),
        ("Security", "T/618/7392"),
        ("Planning a Computing Project", "A/618/7393"),
        ("Software Development Lifecycles", "F/618/7394"),
        ("Website Design & Development", "J/618/7395"),
        ("Cloud Computing", "L/618/7396"),
        ("Business Process Support", "R/618/7397"),
    ),
    "Business": (
        ("The Contemporary Business Environment", "H/508/0487"),
        ("Marketing Processes and Planning", "K/508/0488"),
        ("Human Resource Management", "M/508/0489"),
        ("Leadership and Management", "D/508/0490"),
        ("Accounting Principles", "H/508/0491"),
        ("Managing a Successful Business Project", "K/508/0492"),
        ("Business Law", "M/508/0493"),
        ("Innovation and Commercialisation", "T/508/0494"),
    ),
}

TERMS = ("T1", "T2", "T3")
#: Term -> (start month, day, end month, day, the end is in the next calendar year)
TERM_DATES = {
    "T1": (9, 15, 12, 22, False),
    "T2": (1, 12, 4, 20, True),
    "T3": (5, 4, 8, 10, True),
    "T4": (9, 14, 12, 21, True),
}


def _term_dates(term: str | None, year: str | int | None) -> tuple[str | None, str | None]:
    if term not in TERM_DATES or year is None:
        return None, None
    sm, sd, em, ed, next_year = TERM_DATES[term]
    start_year = int(year) + (1 if next_year else 0)
    return dt.date(start_year, sm, sd).isoformat(), dt.date(start_year, em, ed).isoformat()


def _unit_title(unit: Record | None) -> str:
    if unit is None:
        return "General Studies"
    name = str(unit.get("Name") or "")
    return name.split(": ", 1)[1] if ": " in name else name


def _lookup_name(value: Any) -> Any:
    return value.get("name") if isinstance(value, dict) else None


def _person_name(student: Record | None) -> str | None:
    if student is None:
        return None
    return student.get("Display_Name") or " ".join(
        p for p in (student.get("First_Name"), student.get("Last_Name")) if p
    )


# ---------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------


class ZohoRecordFactory(factory.Factory):
    """Base of the module factories: system keys, owners, times, and the API's shape.

    One id sequence is shared by every subclass: reset it with
    `ZohoRecordFactory.reset_sequence(n)`.
    """

    class Meta:
        model = dict
        abstract = True

    _module: ClassVar[str] = ""

    id = factory.Sequence(zoho_id)
    Owner = factory.LazyFunction(lambda: dict(_choice(USERS)))
    Created_By = factory.LazyAttribute(lambda o: _copy(o.Owner))
    Modified_By = factory.LazyAttribute(lambda o: _copy(o.Created_By))
    Created_Time = factory.LazyFunction(_created_time)
    Modified_Time = factory.LazyAttribute(lambda o: o.Created_Time)
    Last_Activity_Time = factory.LazyAttribute(lambda o: o.Modified_Time)

    @classmethod
    def _setup_next_sequence(cls) -> int:
        return 1

    @classmethod
    def _build(cls, model_class: type, *args: Any, **kwargs: Any) -> Record:
        if args:
            raise ValueError(f"{cls.__name__} takes keyword arguments only")
        return zoho_record(cls._module, kwargs)

    @classmethod
    def _create(cls, model_class: type, *args: Any, **kwargs: Any) -> Record:
        return cls._build(model_class, *args, **kwargs)


class ProgramRecordFactory(ZohoRecordFactory):
    """Products: a BTEC program (an intake of an HND)."""

    _module = PROGRAMS

    class Params:
        major = factory.LazyFunction(lambda: _choice(MAJORS))

    Product_Name = factory.LazyAttributeSequence(
        lambda o, n: (
            f"BTEC Level 5 HND in {MAJOR_TITLES.get(o.major, o.major)} (intake {INTAKE}-{_num(n)})"
        )
    )
    Program_ID = factory.Sequence(lambda n: f"PRG-{INTAKE}-{_num(n):03d}")
    Status = "Approved"
    Program_Major = factory.SelfAttribute("major")
    Unit_Price = 5900.0
    Program_Price = 4800.0


class UnitRecordFactory(ZohoRecordFactory):
    """BTEC: a unit of a program ("Unit 1: Programming")."""

    _module = UNITS

    class Params:
        program = factory.SubFactory(ProgramRecordFactory)
        number = factory.Sequence(lambda n: (_num(n) - 1) % 10 + 1)
        major = factory.LazyAttribute(
            lambda o: (o.program or {}).get("Program_Major") or _choice(MAJORS)
        )
        catalog_entry = factory.LazyAttribute(
            lambda o: UNIT_CATALOG.get(o.major, UNIT_CATALOG["IT"])[
                (o.number - 1) % len(UNIT_CATALOG.get(o.major, UNIT_CATALOG["IT"]))
            ]
        )

    Name = factory.LazyAttribute(lambda o: f"Unit {o.number}: {o.catalog_entry[0]}")
    Unit_Code = factory.LazyAttribute(lambda o: o.catalog_entry[1])
    Unit_Number = factory.LazyAttribute(lambda o: str(o.number))
    Unit_Level = "Level 5"
    Unit_Major = factory.LazyAttribute(lambda o: UNIT_MAJORS.get(o.major))
    Unit_Credit = "15"
    Service_Type = "BTEC"
    Program = factory.LazyAttribute(lambda o: lookup(o.program))


class TeacherRecordFactory(ZohoRecordFactory):
    """BTEC_Teachers."""

    _module = TEACHERS

    class Params:
        locale = factory.LazyFunction(_random_locale)
        first_name = factory.LazyAttribute(lambda o: _first_name(o.locale, None))
        last_name = factory.LazyAttribute(lambda o: str(_faker(o.locale).last_name()))
        slug = factory.LazyAttributeSequence(
            lambda o, n: f"{_slug(o.Name)}.{_num(n)}.{INTAKE.lower()}"
        )

    Name = factory.LazyAttribute(lambda o: f"{o.first_name} {o.last_name}")
    Email = factory.LazyAttribute(lambda o: f"{o.slug}@mail.example.com")
    Academic_Email = factory.LazyAttribute(lambda o: f"{o.slug}@staff.example.edu")
    Phone_Number = factory.LazyFunction(_phone)
    Currency = "USD"


class StudentRecordFactory(ZohoRecordFactory):
    """BTEC_Students: Name is the student number ("A2025MS0PSZ-0003")."""

    _module = STUDENTS

    class Params:
        program = factory.SubFactory(ProgramRecordFactory)
        locale = factory.LazyFunction(_random_locale)
        gender = factory.LazyFunction(lambda: _choice(("Male", "Female")))
        year = 2025

    Name = factory.LazyAttributeSequence(lambda o, n: f"A{o.year}{INTAKE}-{_num(n):04d}")
    First_Name = factory.LazyAttribute(lambda o: _first_name(o.locale, o.gender))
    Last_Name = factory.LazyAttribute(lambda o: str(_faker(o.locale).last_name()))
    Display_Name = factory.LazyAttribute(lambda o: f"{o.First_Name} {o.Last_Name}")
    Email = factory.LazyAttributeSequence(
        lambda o, n: (
            f"{_slug(o.First_Name)}.{_slug(o.Last_Name)}.{_num(n)}.{INTAKE.lower()}"
            "@mail.example.com"
        )
    )
    Academic_Email = factory.LazyAttribute(lambda o: f"{o.Name.lower()}@students.example.edu")
    Status = "Active"
    Gender = factory.SelfAttribute("gender")
    Birth_Date = factory.LazyFunction(
        lambda: _random_date(dt.date(1985, 1, 1), dt.date(2006, 12, 31)).isoformat()
    )
    Nationality = factory.LazyAttribute(
        lambda o: _choice(NATIONALITIES.get(o.locale, NATIONALITIES["en_GB"]))
    )
    Country = "Turkey"
    City = factory.LazyFunction(lambda: _choice(CITIES))
    Phone_Number = factory.LazyFunction(_phone)
    Registration_Date = factory.LazyFunction(
        lambda: _random_date(dt.date(2024, 10, 1), dt.date(2025, 3, 31)).isoformat()
    )
    Currency = "USD"
    Exchange_Rate = 1
    Study_Language = "English"
    Academic_Program = "Level 5"
    Scholarship = "Non-scholarship"
    Major = factory.LazyAttribute(
        lambda o: STUDENT_MAJORS.get((o.program or {}).get("Program_Major", ""))
    )
    Desired_Award = "BTEC"
    Study_Mode = factory.LazyFunction(lambda: _choice(("Online", "Onsite")))
    Payment_Mode = "Installments"
    Payment_Method = "Not specified"
    Service_Type = "BTEC"
    Program = factory.LazyAttribute(lambda o: lookup(o.program))
    st_Payment = 0
    Total_Amount = 0
    Units_Taken_Count = 0
    Units_Passed_Count = 0
    Index = 0


class ClassRecordFactory(ZohoRecordFactory):
    """BTEC_Classes: a unit taught to a group in a term. Lookups: Unit, BTEC_Program, Teacher.

    BTEC_Program is the unit's program unless `program` is given.
    """

    _module = CLASSES

    class Params:
        unit = factory.SubFactory(UnitRecordFactory)
        program = None
        teacher = factory.SubFactory(TeacherRecordFactory)
        term = factory.LazyFunction(lambda: _choice(TERMS))
        year = 2025
        group = factory.Sequence(lambda n: _num(n) - 1)  # 0 -> "Group A"
        dates = factory.LazyAttribute(lambda o: _term_dates(o.Term, o.Year))

    Name = factory.Sequence(lambda n: f"CLS-{INTAKE}-{_num(n):04d}")
    Class_Name = factory.LazyAttribute(
        lambda o: (
            f"{_unit_title(o.unit)} - {o.Term} {o.Year}"
            f" - Group {chr(ord('A') + o.group % 26)} ({INTAKE}-{o.group + 1})"
        )
    )
    Class_Short_Name = factory.LazyAttribute(
        lambda o: f"{(o.unit or {}).get('Unit_Number') or 0}-{o.Term}-{INTAKE}-{o.group + 1:02d}"
    )
    Unit = factory.LazyAttribute(lambda o: lookup(o.unit))
    BTEC_Program = factory.LazyAttribute(
        lambda o: lookup(o.program) if o.program is not None else (o.unit or {}).get("Program")
    )
    Teacher = factory.LazyAttribute(lambda o: lookup(o.teacher))
    Term = factory.SelfAttribute("term")
    Year = factory.LazyAttribute(lambda o: str(o.year))
    Class_Status = "Active"
    Start_Date = factory.LazyAttribute(lambda o: o.dates[0])
    End_Date = factory.LazyAttribute(lambda o: o.dates[1])
    Class_Study_Mode = "Onsite"


class EnrollmentRecordFactory(ZohoRecordFactory):
    """BTEC_Enrollments: a student in a class. Lookups: Enrolled_Students, Classes."""

    _module = ENROLLMENTS

    class Params:
        student = factory.SubFactory(StudentRecordFactory)
        class_ = factory.SubFactory(ClassRecordFactory)

    Name = factory.Sequence(lambda n: f"ENR-{INTAKE}-{_num(n):06d}")
    Enrolled_Students = factory.LazyAttribute(lambda o: lookup(o.student))
    Classes = factory.LazyAttribute(lambda o: lookup(o.class_))
    Student_Name = factory.LazyAttribute(lambda o: _person_name(o.student))
    Class_Name = factory.LazyAttribute(lambda o: (o.class_ or {}).get("Class_Name"))
    Class_Teacher = factory.LazyAttribute(lambda o: _lookup_name((o.class_ or {}).get("Teacher")))
    Start_Date = factory.LazyAttribute(lambda o: (o.class_ or {}).get("Start_Date"))
    End_Date = factory.LazyAttribute(lambda o: (o.class_ or {}).get("End_Date"))
    Enrollment_Type = "Normal"


class RegistrationRecordFactory(ZohoRecordFactory):
    """BTEC_Registrations: a student registered in a program. Lookups: Student_ID, Program.

    Program is the student's program unless `program` is given.
    """

    _module = REGISTRATIONS

    class Params:
        student = factory.SubFactory(StudentRecordFactory)
        program = None

    Name = factory.Sequence(lambda n: f"REG-{INTAKE}-{_num(n):06d}")
    Student_ID = factory.LazyAttribute(lambda o: lookup(o.student))
    Program = factory.LazyAttribute(
        lambda o: lookup(o.program) if o.program is not None else (o.student or {}).get("Program")
    )
    First_Name = factory.LazyAttribute(lambda o: (o.student or {}).get("First_Name"))
    Last_Name = factory.LazyAttribute(lambda o: (o.student or {}).get("Last_Name"))
    Registration_Date = factory.LazyAttribute(
        lambda o: (
            (o.student or {}).get("Registration_Date")
            or _random_date(dt.date(2024, 10, 1), dt.date(2025, 3, 31)).isoformat()
        )
    )
    Registration_Status = "Active"
    Currency = "USD"
    Exchange_Rate = 1
    Study_Mode = factory.LazyAttribute(lambda o: (o.student or {}).get("Study_Mode") or "Online")
    Study_Language = "English"
    Program_Price = factory.LazyAttribute(
        lambda o: f"{(o.program or {}).get('Program_Price') or 4800.0:.0f}"
    )


class PaymentRecordFactory(ZohoRecordFactory):
    """BTEC_Payments: an installment of a registration. Lookups: Registration_ID, Student_ID.

    Student_ID is the registration's student unless `student` is given. Installment_No 0 is
    the registration fee.
    """

    _module = PAYMENTS

    class Params:
        registration = factory.SubFactory(RegistrationRecordFactory)
        student = None

    Name = factory.Sequence(lambda n: f"PAY-{INTAKE}-{_num(n):06d}")
    Registration_ID = factory.LazyAttribute(lambda o: lookup(o.registration))
    Student_ID = factory.LazyAttribute(
        lambda o: (
            lookup(o.student) if o.student is not None else (o.registration or {}).get("Student_ID")
        )
    )
    Installment_No = 1
    Payment_Type = factory.LazyAttribute(
        lambda o: "Registration Fees" if o.Installment_No == 0 else "Study Fees"
    )
    Payment_Amount = factory.LazyAttribute(
        lambda o: 300.0 if o.Installment_No == 0 else float(_choice((800, 1200, 1600, 2400)))
    )
    Payment_Date = factory.LazyFunction(
        lambda: _random_date(dt.date(2024, 10, 1), dt.date(2025, 6, 30)).isoformat()
    )
    Payment_Method = factory.LazyFunction(lambda: _choice(("Cash", "Bank Transfer")))
    Currency = "USD"
    Exchange_Rate = 1


class GradeRecordFactory(ZohoRecordFactory):
    """BTEC_Grades: a student's grade in a class. Lookups: Student, Class."""

    _module = GRADES

    class Params:
        student = factory.SubFactory(StudentRecordFactory)
        class_ = factory.SubFactory(ClassRecordFactory)

    Name = factory.Sequence(lambda n: f"GRD-{INTAKE}-{_num(n):06d}")
    Student = factory.LazyAttribute(lambda o: lookup(o.student))
    Class = factory.LazyAttribute(lambda o: lookup(o.class_))
    Student_Name = factory.LazyAttribute(lambda o: _person_name(o.student))
    Class_Name = factory.LazyAttribute(lambda o: (o.class_ or {}).get("Class_Name"))
    BTEC_Unit = factory.LazyAttribute(lambda o: _lookup_name((o.class_ or {}).get("Unit")))
    Grader_Name = factory.LazyAttribute(lambda o: _lookup_name((o.class_ or {}).get("Teacher")))
    Grade = factory.LazyFunction(
        lambda: _rng().choices(("P", "M", "D", "R", "RR"), weights=(5, 3, 2, 1, 1))[0]
    )
    Grade_Status = "Released"
    Attempt_Number = 1
    Attempt_Date = factory.LazyAttribute(
        lambda o: (
            (o.class_ or {}).get("End_Date")
            or _random_date(dt.date(2025, 1, 1), dt.date(2025, 12, 31)).isoformat()
        )
    )


#: module API name -> its factory
FACTORIES: dict[str, type[ZohoRecordFactory]] = {
    PROGRAMS: ProgramRecordFactory,
    UNITS: UnitRecordFactory,
    TEACHERS: TeacherRecordFactory,
    STUDENTS: StudentRecordFactory,
    CLASSES: ClassRecordFactory,
    ENROLLMENTS: EnrollmentRecordFactory,
    REGISTRATIONS: RegistrationRecordFactory,
    PAYMENTS: PaymentRecordFactory,
    GRADES: GradeRecordFactory,
}

# ---------------------------------------------------------------------------------------------
# Whole colleges
# ---------------------------------------------------------------------------------------------

#: build_college's people: mostly English names, some in Arabic and Turkish script
COLLEGE_LOCALES = ("en_GB", "ar_SA", "en_GB", "en_GB", "tr_TR")


class _Clock:
    """Creation times that move forward, as records are entered one after the other."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def tick(self) -> str:
        self.now += dt.timedelta(seconds=_rng().randint(60, 900))
        return zoho_datetime(self.now)


def build_college(
    *,
    students: int = 8,
    teachers: int = 3,
    programs: int = 2,
    units: int = 4,
    classes: int = 5,
    enrollments_per_student: int = 2,
    payments_per_student: int = 2,
    seed: int = 20250510,
) -> dict[str, list[Record]]:
    """A small college: module API name -> records, every lookup resolving within it.

    `units` and `classes` are totals: units are spread over the programs, classes over the
    units and teachers; each student belongs to a program, is registered in it, enrolled in
    `enrollments_per_student` of its classes (fewer if it has fewer), graded in each, and has
    paid a registration fee plus `payments_per_student - 1` installments.

    The same arguments give the same college. Its ids come from a block of the id sequence
    chosen by `seed` (see `college_id_start`), so colleges built with different seeds share
    no ids, nor with records built one by one. factory-boy's random state and the id
    sequence are put back afterwards.
    """
    counts = {"students": students, "teachers": teachers, "programs": programs, "units": units}
    counts |= {"classes": classes, "enrollments_per_student": enrollments_per_student}
    counts |= {"payments_per_student": payments_per_student}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"counts cannot be negative: {counts}")
    if programs == 0 and (units or students):
        raise ValueError("units and students need at least one program")
    if units == 0 and classes:
        raise ValueError("classes need at least one unit")

    saved_state = factory.random.get_random_state()
    resume_at = ZohoRecordFactory._meta.next_sequence()
    factory.random.reseed_random(seed)
    ZohoRecordFactory.reset_sequence(college_id_start(seed))
    try:
        clock = _Clock(dt.datetime(2025, 5, 10, 1, 40, tzinfo=ZOHO_TZ))

        program_records = [
            ProgramRecordFactory(major=MAJORS[i % len(MAJORS)], Created_Time=clock.tick())
            for i in range(programs)
        ]
        unit_records: list[Record] = []
        for i in range(units):
            program = program_records[i % programs]
            number = sum(1 for u in unit_records if u["Program"]["id"] == program["id"]) + 1
            unit_records.append(
                UnitRecordFactory(program=program, number=number, Created_Time=clock.tick())
            )
        teacher_records = [
            TeacherRecordFactory(
                locale=COLLEGE_LOCALES[(i + 4) % len(COLLEGE_LOCALES)], Created_Time=clock.tick()
            )
            for i in range(teachers)
        ]
        student_records = [
            StudentRecordFactory(
                program=program_records[i % programs],
                locale=COLLEGE_LOCALES[i % len(COLLEGE_LOCALES)],
                Created_Time=clock.tick(),
            )
            for i in range(students)
        ]
        class_records = [
            ClassRecordFactory(
                unit=unit_records[i % units],
                teacher=teacher_records[i % teachers] if teachers else None,
                term=TERMS[i % len(TERMS)],
                group=i,
                Created_Time=clock.tick(),
            )
            for i in range(classes)
        ]

        enrollment_records: list[Record] = []
        grade_records: list[Record] = []
        for student in student_records:
            own = [c for c in class_records if c["BTEC_Program"] == student["Program"]]
            pool = own or class_records
            picked = _rng().sample(pool, min(enrollments_per_student, len(pool)))
            for class_record in sorted(picked, key=lambda c: c["Name"]):
                enrollment_records.append(
                    EnrollmentRecordFactory(
                        student=student, class_=class_record, Created_Time=clock.tick()
                    )
                )
                grade_records.append(
                    GradeRecordFactory(
                        student=student, class_=class_record, Created_Time=clock.tick()
                    )
                )

        registration_records: list[Record] = []
        payment_records: list[Record] = []
        for student, program in zip(
            student_records, (program_records[i % programs] for i in range(students)), strict=True
        ):
            registration = RegistrationRecordFactory(
                student=student, program=program, Created_Time=clock.tick()
            )
            registration_records.append(registration)
            payment_records.extend(
                PaymentRecordFactory(
                    registration=registration, Installment_No=k, Created_Time=clock.tick()
                )
                for k in range(payments_per_student)
            )
    finally:
        factory.random.set_random_state(saved_state)
        ZohoRecordFactory.reset_sequence(resume_at)

    return {
        PROGRAMS: program_records,
        UNITS: unit_records,
        TEACHERS: teacher_records,
        STUDENTS: student_records,
        CLASSES: class_records,
        ENROLLMENTS: enrollment_records,
        REGISTRATIONS: registration_records,
        PAYMENTS: payment_records,
        GRADES: grade_records,
    }


def college_id_start(seed: int) -> int:
    """The sequence number build_college(seed=seed) starts its ids at."""
    return (1000 + seed % 9000) * COLLEGE_ID_BLOCK + 1


@cache
def _sample_text() -> str:
    return (DATA_DIR / "sample-college-records.json").read_text(encoding="utf-8")


def load_sample_college() -> dict[str, list[Record]]:
    """The sample college's records (module API name -> records); a fresh copy each call."""
    modules: dict[str, list[Record]] = json.loads(_sample_text())["modules"]
    return modules
