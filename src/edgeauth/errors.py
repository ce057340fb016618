"""The one exception tree of edgeauth.

::

    EdgeAuthError
    ├── ConfigError            the policy (or a keys file) does not load; lists every issue
    ├── BadRequest             the request is malformed or ambiguous      -> 400 bad_request
    ├── StoreUnavailable       the state store (Redis, the revocation file) fails;
    │                          rate limits follow on_store_error, revocation fails closed
    └── CredentialError        raised by authenticators, never seen by users
        ├── InvalidCredentials a credential is present but bad         -> 401 invalid_token
        │   └── Revoked        a valid credential that was revoked     -> 401 revoked
        └── AuthUnavailable    keys cannot be obtained (JWKS down), or the
                               revocation list is stale                 -> 503 auth_unavailable

Denials are values (:class:`edgeauth.model.Denial`), not exceptions: these
exceptions only travel from a stage to the pipeline, which turns them into a
denial. Foreign exceptions (PyJWT, aiohttp, tomllib, pydantic) are translated
at the boundary where they occur. Messages never contain a credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AuthUnavailable",
    "BadRequest",
    "ConfigError",
    "ConfigIssue",
    "CredentialError",
    "EdgeAuthError",
    "InvalidCredentials",
    "Revoked",
    "StoreUnavailable",
]


class EdgeAuthError(Exception):
    """Base of every exception edgeauth raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file: where it is and what was expected."""

    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.location or "(top level)"
        if self.line is not None:
            where = f"line {self.line}: {where}"
        return f"{where}: {self.message}"


class ConfigError(EdgeAuthError):
    """A configuration file does not load. ``issues`` holds every problem found.

    >>> str(ConfigError("edgeauth.toml", [ConfigIssue("rules[0].match", "expected a path", 7)]))
    'edgeauth.toml: 1 error\\n  line 7: rules[0].match: expected a path'
    """

    def __init__(self, file: str, issues: Sequence[ConfigIssue]) -> None:
        self.file = file
        self.issues = tuple(issues)
        count = len(self.issues)
        lines = [f"{file}: {count} error{'s' if count != 1 else ''}"]
        lines += [f"  {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class BadRequest(EdgeAuthError):
    """The request is malformed or ambiguous; answered with 400 ``bad_request``."""


class StoreUnavailable(EdgeAuthError):
    """The shared state store cannot be used right now (Redis down, timed out, or
    the revocation file unwritable). Never seen by clients: rate limits follow
    ``[state] on_store_error``, revocation fails closed once its copy is stale."""


class CredentialError(EdgeAuthError):
    """Raised by an authenticator; the pipeline turns it into a denial."""


class InvalidCredentials(CredentialError):
    """A credential is present but invalid, expired or unknown. Do not fall through."""


class Revoked(InvalidCredentials):
    """A credential that verified but has been revoked."""


class AuthUnavailable(CredentialError):
    """Keys, or a fresh enough revocation list, cannot be obtained right now;
    fail closed with 503, never allow."""
