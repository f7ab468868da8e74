"""The FastAPI app every HTTP service starts from (the three services and the dashboard).

:func:`service_app` makes it with what they all share: Swagger UI served offline
(:mod:`carbonscaler.services._docs`) and the request validation of
:mod:`carbonscaler.services._validation`. Each then adds its own routes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from carbonscaler.services._docs import OFFLINE_DOCS, install_offline_docs
from carbonscaler.services._validation import MAX_BODY_BYTES, install_request_validation

__all__ = ["service_app"]


def service_app(
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """A service's app: version 1 of its API, with offline docs at ``/docs`` and request
    bodies bounded to ``max_body_bytes`` and validated."""
    app = FastAPI(
        title=title,
        version="1",
        description=description,
        lifespan=lifespan,
        **OFFLINE_DOCS,
    )
    install_request_validation(app, max_body_bytes=max_body_bytes)
    install_offline_docs(app)
    return app
