"""FastAPI (and Starlette) dependencies for the identity edgeauth verified.

>>> from fastapi import Depends
>>> @app.get("/me")                                                   # doctest: +SKIP
... def me(identity: Annotated[Identity, Depends(current_identity)]) -> dict[str, str]:
...     return {"subject": identity.subject}

When there is no identity (a public route, or the app is not behind
:class:`~edgeauth.EdgeAuth`), :func:`current_identity` answers 401 with
edgeauth's own JSON body, not FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from .middleware import IdentityRequired
from .model import Identity

__all__ = ["current_identity", "optional_identity"]


def optional_identity(connection: HTTPConnection) -> Identity | None:
    """The verified identity, or None for an anonymous request."""
    identity = connection.scope.get("edgeauth")
    return identity if isinstance(identity, Identity) else None


def current_identity(connection: HTTPConnection) -> Identity:
    """The verified identity; a request without one gets edgeauth's 401 JSON."""
    identity = optional_identity(connection)
    if identity is None:
        raise IdentityRequired
    return identity
