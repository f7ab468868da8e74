"""Bearer-token checks for the FastAPI services (see :mod:`carbonscaler.security.tokens`).

One :class:`TokenAuth` per app: ``auth.required`` is the dependency list for endpoints
that need the token when one is set (empty when none is: tokens are opt-in on loopback),
``auth.authorized(credentials)`` tells a handler whether the caller sent it (for answers
that show more to the admin), and ``auth.push_required`` guards an endpoint the carbon
service pushes to (token or push key).
"""

# No `from __future__ import annotations`: FastAPI evaluates the dependency signatures.

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carbonscaler.security.tokens import PUSH_KEY_PARAM, bearer_value, push_key, token_matches
from carbonscaler.services._models import ErrorOut

__all__ = ["TokenAuth"]


class TokenAuth:
    """The token checks of one service.

    Args:
        token: The bearer token; None leaves every endpoint open.
        description: How the OpenAPI document describes the token.
    """

    def __init__(self, token: str | None, description: str = "The service token") -> None:
        if token is not None and not token.strip():
            raise ValueError("the token must not be empty")
        self.token = token
        self.scheme = HTTPBearer(auto_error=False, description=description)
        scheme = self.scheme

        async def require(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
        ) -> None:
            if not self.authorized(credentials):
                raise self.unauthorized()

        async def require_push(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
            key: Annotated[
                str | None,
                Query(
                    alias=PUSH_KEY_PARAM,
                    max_length=128,
                    description="The push key, for the carbon service's pushes",
                ),
            ] = None,
        ) -> None:
            if self.token is None:
                return
            given = None if credentials is None else credentials.credentials
            derived = push_key(self.token)
            if not (
                token_matches(given, self.token)
                or token_matches(given, derived)
                or token_matches(key, derived)
            ):
                raise self.unauthorized("the token or the push key")

        self.required: list[Any] = [] if token is None else [Depends(require)]
        """Dependencies of an endpoint that needs the token when one is set."""
        self.push_required: list[Any] = [] if token is None else [Depends(require_push)]
        """Dependencies of a push endpoint: the token, or the push key."""
        self.responses: dict[int | str, dict[str, Any]] = (
            {} if token is None else {401: {"model": ErrorOut, "description": "No or wrong token"}}
        )
        """OpenAPI responses to add to guarded endpoints."""

    def authorized(self, credentials: HTTPAuthorizationCredentials | str | None) -> bool:
        """Whether the caller sent the token (always True when none is set)."""
        if self.token is None:
            return True
        if isinstance(credentials, HTTPAuthorizationCredentials):
            credentials = credentials.credentials
        return token_matches(credentials, self.token)

    @staticmethod
    def bearer(request: Request) -> str | None:
        """The caller's bearer credentials, read without declaring them in the OpenAPI
        document: for endpoints that answer everyone and show more to the token's holder."""
        return bearer_value(request.headers.get("authorization"))

    def unauthorized(self, what: str = "the token") -> HTTPException:
        """The 401 answer, saying how to authenticate."""
        return HTTPException(
            401,
            f"this endpoint needs {what}: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
