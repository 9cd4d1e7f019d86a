"""The interactive API reference (`/docs`, Swagger UI) and `/redoc`, with their scripts and styles
served by the service itself, so that they work on a network with no way out to a CDN."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_PATH = "/docs-assets"
"""Where the Swagger UI and ReDoc files (shipped by the `fastapi-offline` package) are served."""
PUBLIC_PATHS = (DOCS_URL, REDOC_URL, ASSETS_PATH)
"""What `install_docs_pages` serves, to anyone: the reference holds no data."""

_ASSETS_PACKAGE = ("fastapi_offline", "static")


def install_docs_pages(app: FastAPI) -> None:
    """Serve the two reference pages, and the files they load, from `app`. The app itself must
    be made with `docs_url=None, redoc_url=None`, or FastAPI's own CDN pages answer first."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[_ASSETS_PACKAGE]), name="docs-assets")

    def assets(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - API reference",
            swagger_js_url=f"{assets(request)}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets(request)}/swagger-ui.css",
            swagger_favicon_url=f"{assets(request)}/favicon.png",
            # Swagger UI would otherwise send the spec's address to an online validator.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets(request)}/redoc.standalone.js",
            redoc_favicon_url=f"{assets(request)}/favicon.png",
            with_google_fonts=False,
        )
