"""Swagger UI for every service's ``/docs``, served from the package: no CDN, works offline.

FastAPI's own ``/docs`` page loads Swagger UI's script and style from a CDN, so offline or
behind a proxy it is blank. :func:`install_offline_docs` serves the same page with the assets
of ``swagger-ui-dist`` vendored in ``services/static/swagger-ui/`` (version and licence in
:data:`SWAGGER_UI_VERSION` and that folder's ``LICENSE``/``NOTICE``), under
``/docs/assets/``. ReDoc (``/redoc``), which has the same CDN problem, is not offered: create
the app with :data:`OFFLINE_DOCS` so FastAPI does not add either page itself.

Example:
    >>> app = FastAPI(title="x", **OFFLINE_DOCS)  # doctest: +SKIP
    >>> install_offline_docs(app)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = [
    "DOCS_ASSETS_PATH",
    "OFFLINE_DOCS",
    "SWAGGER_UI_DIR",
    "SWAGGER_UI_VERSION",
    "install_offline_docs",
]

SWAGGER_UI_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
"""The vendored files: ``swagger-ui-bundle.js``, ``swagger-ui.css``, the favicon, licences."""

SWAGGER_UI_VERSION = "5.35.0"
"""The ``swagger-ui-dist`` release vendored (``npm pack swagger-ui-dist@5.35.0``)."""

DOCS_ASSETS_PATH = "/docs/assets"
"""Where the assets are served."""

OFFLINE_DOCS: dict[str, Any] = {"docs_url": None, "redoc_url": None}
"""``FastAPI(...)`` keywords that keep FastAPI's CDN-based pages out."""


def install_offline_docs(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at ``docs_url`` with the packaged assets.

    The app must have been created with :data:`OFFLINE_DOCS` (else FastAPI's own page would
    answer ``docs_url`` first).

    Args:
        app: the service.
        docs_url: the page's path.

    Raises:
        ValueError: if FastAPI's own docs pages are still on.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with **OFFLINE_DOCS so FastAPI adds no CDN pages")
    assert app.openapi_url is not None, "the docs page needs the OpenAPI document"
    openapi_url = app.openapi_url
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, every URL on the page needs it back.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon-32x32.png",
            # No badge from the online validator, which would send the document away.
            swagger_ui_parameters={"validatorUrl": None},
        )
