"""The authenticator protocol and credential places.

An authenticator is handed one credential string that the pipeline took from
one of its ``sources``. It has three outcomes (starlette's ``AuthenticationBackend``
and Oathkeeper's ``ErrAuthenticatorNotResponsible`` are the model):

- ``None``: not this authenticator's kind of credential (wrong shape, another
  issuer); the pipeline offers it to the next authenticator;
- an :class:`~edgeauth.model.Identity`;
- raise :class:`~edgeauth.errors.InvalidCredentials` (present but bad: deny, do
  not fall through) or :class:`~edgeauth.errors.AuthUnavailable` (fail closed).
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal, NamedTuple, Protocol

from ..headers import is_token
from ..model import Identity

__all__ = ["Authenticator", "CredentialSource", "looks_like_jwt"]


class CredentialSource(NamedTuple):
    """Where a credential is read: ``cookie:NAME``, ``bearer`` or ``header:NAME``.

    A named tuple: sources key the per-request credential dicts, and a tuple
    hashes and compares in C.

    >>> CredentialSource.parse("header:X-API-Key")
    CredentialSource(kind='header', name='x-api-key')
    """

    kind: Literal["cookie", "bearer", "header"]
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> CredentialSource:
        """Parse the policy spelling; raises ValueError with what was expected."""
        if text == "bearer":
            return cls("bearer")
        kind, sep, name = text.partition(":")
        if sep and name and kind in ("cookie", "header") and not is_token(name):
            raise ValueError(
                f"a {kind} name is letters, digits and !#$%&'*+-.^_`|~ (RFC 9110 token),"
                f" got {name!r} in {text!r}"
            )
        if sep and name and kind == "cookie":
            return cls("cookie", name)
        if sep and name and kind == "header":
            lowered = name.lower()
            if lowered in ("authorization", "cookie"):
                raise ValueError(f"use 'bearer' or 'cookie:NAME' instead of {text!r}")
            return cls("header", lowered)
        raise ValueError(f"expected 'bearer', 'cookie:NAME' or 'header:NAME', got {text!r}")

    @property
    def place(self) -> str:
        """The name the front-ends use to withhold this credential from the upstream."""
        if self.kind == "bearer":
            return "authorization"
        if self.kind == "cookie":
            return f"cookie:{self.name}"
        return self.name

    def __str__(self) -> str:
        return "bearer" if self.kind == "bearer" else f"{self.kind}:{self.name}"


class Authenticator(Protocol):
    """One configured authenticator (``[authenticators.ID]``)."""

    @property
    def id(self) -> str: ...

    @property
    def sources(self) -> tuple[CredentialSource, ...]: ...

    @property
    def forward_credential(self) -> bool: ...

    def verified(self, credential: str, now: float) -> Identity | None:
        """The identity of a ``credential`` verified before and still valid at
        ``now``, when that can be told without waiting (a cache hit); None means
        "call :meth:`authenticate`", never "refused"."""
        ...

    async def authenticate(self, credential: str, now: float) -> Identity | None:
        """Verify ``credential`` at time ``now`` (seconds since the epoch)."""
        ...

    async def aclose(self) -> None:
        """Release what the authenticator holds (HTTP sessions)."""
        ...


def looks_like_jwt(credential: str) -> bool:
    """True when ``credential`` has the shape of a compact JWS: three base64url
    parts whose first decodes to a JSON object. Used to route a credential read
    from a shared place (``bearer``) to the right authenticator; it verifies
    nothing.
    """
    head, dot, _ = credential.partition(".")
    if not dot or credential.count(".") != 2 or not head:
        return False
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return raw[:1] == b"{"
