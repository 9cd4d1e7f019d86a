"""A tenant's delivery policy is checked when it is stored, so that the worker never meets a
policy it cannot apply."""

from __future__ import annotations

import pytest

from tests.worker.conftest import MoodleSync
from zoho_moodle_sync.errors import ConfigurationError


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ({"teacher_role": "noneditingteacher"}, "no role id configured for 'noneditingteacher'"),
        ({"roles": {"editingteacher": 3}}, "no role id configured for 'student'"),
        ({"removal_policy": "delete"}, "removal_policy"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone"),
        ({"mass_change_share": 0}, "mass_change_share"),
    ],
)
def test_a_policy_the_worker_could_not_apply_is_refused(
    moodle_sync: MoodleSync, policy: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match="invalid delivery policy") as refused:
        moodle_sync.set_policy(**policy)
    assert problem in str(refused.value)
