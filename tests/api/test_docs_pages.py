"""`/docs` and `/redoc` work with no internet: every file they load is served by the service."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.settings import Settings

# Addresses a page loads: src/href attributes, ReDoc's spec-url, Swagger UI's `url: '...'`.
_REFERENCE = re.compile(r"""(?:\b(?:src|href|spec-url)=["']|\burl:\s*')([^"']+)""")
_CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


@pytest.fixture
def docs_client() -> TestClient:
    """The app without its lifespan: the reference pages need no database."""
    settings = Settings(database_url="sqlite:///:memory:", _env_file=None)
    return TestClient(create_app(settings))


@pytest.fixture
def proxied_client() -> TestClient:
    """The app as seen behind a reverse proxy that serves it under `/sync`."""
    settings = Settings(database_url="sqlite:///:memory:", _env_file=None)
    return TestClient(create_app(settings), root_path="/sync")


def references(html: str) -> list[str]:
    found = _REFERENCE.findall(html)
    assert found, "the page loads nothing: the pattern no longer matches the page"
    return found


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"}),
        ("/redoc", {"/docs-assets/redoc.standalone.js"}),
    ],
)
def test_reference_pages_load_only_files_the_service_serves(
    docs_client: TestClient, page: str, expected: set[str]
) -> None:
    response = docs_client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text
    assert "https://" not in response.text
    loaded = references(response.text)
    assert expected <= set(loaded)
    assert "/openapi.json" in loaded
    for url in loaded:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        answer = docs_client.get(url)
        assert answer.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert answer.headers["content-type"].startswith(_CONTENT_TYPES[suffix]), url
        assert len(answer.content) > 1000, url


def test_swagger_ui_is_told_not_to_call_the_online_validator(docs_client: TestClient) -> None:
    html = docs_client.get("/docs").text

    assert '"validatorUrl": null' in html


def test_the_bundles_are_the_real_swagger_ui_and_redoc(docs_client: TestClient) -> None:
    assert "SwaggerUIBundle" in docs_client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "Redoc" in docs_client.get("/docs-assets/redoc.standalone.js").text
    assert ".swagger-ui" in docs_client.get("/docs-assets/swagger-ui.css").text


def test_pages_behind_a_path_prefix_load_their_files_under_that_prefix(
    proxied_client: TestClient,
) -> None:
    for page in ("/docs", "/redoc"):
        loaded = references(proxied_client.get(page).text)

        assert all(url.startswith("/sync/") for url in loaded), loaded


def test_the_asset_folder_serves_nothing_else(docs_client: TestClient) -> None:
    assert docs_client.get("/docs-assets/../settings.py").status_code == 404
    assert docs_client.get("/docs-assets/core.py").status_code == 404
