"""edgeauth: one auth policy, enforced at the edge of any web app.

>>> from edgeauth import EdgeAuth, load_policy
>>> app = EdgeAuth(app, policy=load_policy("edgeauth.toml"))   # doctest: +SKIP
"""

from __future__ import annotations

from .config import load_policy
from .errors import (
    AuthUnavailable,
    BadRequest,
    ConfigError,
    ConfigIssue,
    CredentialError,
    EdgeAuthError,
    InvalidCredentials,
    Revoked,
    StoreUnavailable,
)
from .middleware import EdgeAuth, IdentityRequired
from .model import Allow, Code, Denial, Identity, Kind, Outcome, Preflight, RequestView
from .pipeline import Engine
from .policy import Policy

__version__ = "0.1.0"

__all__ = [
    "Allow",
    "AuthUnavailable",
    "BadRequest",
    "Code",
    "ConfigError",
    "ConfigIssue",
    "CredentialError",
    "Denial",
    "EdgeAuth",
    "EdgeAuthError",
    "Engine",
    "Identity",
    "IdentityRequired",
    "InvalidCredentials",
    "Kind",
    "Outcome",
    "Policy",
    "Preflight",
    "RequestView",
    "Revoked",
    "StoreUnavailable",
    "__version__",
    "load_policy",
]
