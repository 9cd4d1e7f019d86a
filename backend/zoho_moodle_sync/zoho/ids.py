"""What a Zoho record id is: a string of ASCII digits (Zoho's ids are 19 digits today; up to 32
fit the columns that hold them). The one check every stage uses."""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_LENGTH = 32
_ZOHO_ID = re.compile(r"[0-9]{1,%d}" % MAX_LENGTH)  # noqa: UP031 (a pattern, not a message)


def is_zoho_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ZOHO_ID.fullmatch(value) is not None
