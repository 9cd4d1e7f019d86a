"""Convergence without trusting webhooks, with the service's real processes over HTTP: on a fresh
install `zoho-moodle-sync pull default` imports a college from the Zoho API with a progress bar
and Moodle converges; an edit whose webhook never came is caught by the next catch-up with no
action from anyone; an enrolment removed by hand in Moodle is reported and restored by
`zoho-moodle-sync moodle check default --repair`."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.servers import console_script, process
from tests.factories import STUDENTS, load_sample_college
from tests.fakes.moodle import DEFAULT_TOKEN, FakeMoodle
from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from tests.security.conftest import serving
from tests.worker.conftest import ENTITY_OF_MODULE, person
from tests.worker.test_convergence import INVALID_IN_SAMPLE, assert_college_in_moodle
from tests.worker.test_drift import by_hand, enrolled
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.moodle import Unenrolment
from zoho_moodle_sync.settings import Settings

pytestmark = pytest.mark.e2e

CONVERGE_SECONDS = 90


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `zoho-moodle-sync ARGS` with a pseudo-terminal as its output; status and output."""
    controller, terminal = pty.openpty()
    running = subprocess.Popen(  # noqa: S603
        [console_script(), *args], env=env, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return running.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def eventually(what: str, check: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + CONVERGE_SECONDS
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except AssertionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} within {CONVERGE_SECONDS}s; the worker's log:\n{log.read_text()}")


def converged(fake: FakeMoodle, college: dict[str, list[dict[str, str]]]) -> bool:
    assert_college_in_moodle(fake, college)
    return True


def test_import_catch_up_and_drift_repair_on_a_fresh_install(
    backend: str, db: Database, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("a worker and the command line share the database only on PostgreSQL")
    college = load_sample_college()
    fake_zoho = FakeZoho(modules=ENTITY_OF_MODULE)
    fake_zoho.seed(college)
    fake_moodle = FakeMoodle()
    with serving(fake_zoho) as zoho_url, serving(fake_moodle) as moodle_url:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env |= {
            "DATABASE_URL": db.url,
            "AUTO_MIGRATE": "false",
            "ZOHO_CLIENT_ID": DEFAULT_CLIENT_ID,
            "ZOHO_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "ZOHO_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
            "ZOHO_ACCOUNTS_URL": zoho_url,
            "MOODLE_URL": moodle_url,
            "MOODLE_TOKEN": DEFAULT_TOKEN,
            "WORKER_POLL_SECONDS": "0.2",
            "RECONCILE_MINUTES": "0.05",
            "RECONCILE_OVERLAP_MINUTES": "1",
            "COLUMNS": "160",
        }
        status, shown = on_a_terminal(["pull", "default"], env)
        assert status == 0, shown
        assert "students (BTEC_Students)" in shown  # the bar of a module
        assert "━" in shown
        assert "Import" in shown  # the summary table
        assert "NEW" in shown

        worker_log = tmp_path / "worker.log"
        with process(["worker"], env, worker_log):
            eventually(
                "the import did not reach Moodle",
                lambda: converged(fake_moodle, college),
                worker_log,
            )

            # An edit in Zoho whose webhook never comes.
            edited = next(
                s["id"]
                for s in college[STUDENTS]
                if ("students", s["id"]) not in INVALID_IN_SAMPLE and s["Status"] == "Active"
            )
            fake_zoho.update_record(STUDENTS, edited, {"Last_Name": "Caught-Up"})
            eventually(
                "the catch-up did not bring the edit",
                lambda: person(fake_moodle, edited).lastname == "Caught-Up",
                worker_log,
            )

            # An enrolment removed by hand in Moodle.
            (user, course), *_ = enrolled(college, fake_moodle)
            by_hand(fake_moodle, ("unenrol_users", [Unenrolment(userid=user, courseid=course)]))
            check = subprocess.run(  # noqa: S603
                [console_script(), "moodle", "check", "default", "--repair"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert check.returncode == 0, check.stdout + check.stderr
            assert "missing_enrolment" in check.stdout
            eventually(
                "the repair did not restore the enrolment",
                lambda: fake_moodle.enrolment(user, course) is not None,
                worker_log,
            )
