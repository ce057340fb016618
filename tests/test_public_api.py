"""The public surface is pinned: a change here is a change users see."""

from __future__ import annotations

import edgeauth


def test_exported_names() -> None:
    """edgeauth exports exactly these names."""
    assert sorted(edgeauth.__all__) == sorted(
        [
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
    )
    for name in edgeauth.__all__:
        assert getattr(edgeauth, name) is not None


def test_codes_and_statuses_are_the_documented_ones() -> None:
    """Every stable code maps to the status DESIGN.md gives it."""
    expected = {
        "bad_request": 400,
        "missing_credentials": 401,
        "invalid_token": 401,
        "revoked": 401,
        "forbidden": 403,
        "insufficient_scope": 403,
        "csrf": 403,
        "untrusted_peer": 403,
        "not_found": 404,
        "payload_too_large": 413,
        "rate_limited": 429,
        "headers_too_large": 431,
        "internal_error": 500,
        "bad_gateway": 502,
        "gateway_timeout": 504,
        "auth_unavailable": 503,
    }
    assert {c.value: c.status for c in edgeauth.Code} == expected
