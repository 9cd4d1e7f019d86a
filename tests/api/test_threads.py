"""An API process works on `API_THREADS` requests at once; the rest wait their turn."""

from __future__ import annotations

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


@pytest.mark.parametrize("threads", [1, 3])
def test_requests_work_on_api_threads_at_once(
    settings: Settings, db: Database, threads: int
) -> None:
    app = create_app(settings.model_copy(update={"api_threads": threads}), db)

    with TestClient(app, headers=AUTH) as client:
        assert client.get("/v1/health").status_code == 200
        assert client.portal is not None
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens
        )

    assert tokens == threads


def test_the_default_is_a_few_threads() -> None:
    assert Settings(_env_file=None).api_threads == 8
