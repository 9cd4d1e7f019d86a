"""The one fingerprint: SHA-256 of a value's canonical JSON (sorted keys, one spelling per
value). What a record's domain fields are (to tell NEW, UPDATED and UNCHANGED apart), and what
was last sent to Moodle for it (so an unchanged record costs no call)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def fingerprint(value: Any) -> str:
    """`value`: a JSON-like mapping, or a dataclass (its fields)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
