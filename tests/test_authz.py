"""Authorization: roles any-of, scopes all-of, claims by equality (type included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeauth.authz import Requirement
from edgeauth.model import Code, Identity

from .helpers import ADMIN_KEY, API_KEY, SEED_POLICY, call, guarded, session_token


def ident(**kwargs: object) -> Identity:
    return Identity("u", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requirement", "identity", "expected"),
    [
        (Requirement.build(roles=["admin", "ops"]), ident(roles=("ops",)), None),
        (Requirement.build(roles=["admin"]), ident(roles=("user",)), Code.FORBIDDEN),
        (Requirement.build(roles=["admin"]), ident(), Code.FORBIDDEN),
        (Requirement.build(scopes=["a", "b"]), ident(scopes=("b", "a", "c")), None),
        (Requirement.build(scopes=["a", "b"]), ident(scopes=("a",)), Code.INSUFFICIENT_SCOPE),
        (Requirement.build(claims={"tenant": "t1"}), ident(claims={"tenant": "t1"}), None),
        (
            Requirement.build(claims={"tenant": "t1"}),
            ident(claims={"tenant": "t2"}),
            Code.FORBIDDEN,
        ),
        (Requirement.build(claims={"tenant": "t1"}), ident(), Code.FORBIDDEN),
        (Requirement.build(claims={"level": 1}), ident(claims={"level": True}), Code.FORBIDDEN),
        (Requirement.build(claims={"level": 1}), ident(claims={"level": "1"}), Code.FORBIDDEN),
        (Requirement.build(claims={"admin": True}), ident(claims={"admin": True}), None),
        (
            Requirement.build(roles=["x"], scopes=["s"]),
            ident(roles=("y",), scopes=()),
            Code.FORBIDDEN,
        ),
        (Requirement(), ident(), None),
    ],
)
def test_requirement_check(
    requirement: Requirement, identity: Identity, expected: Code | None
) -> None:
    """Each kind of requirement refuses with its own code."""
    assert requirement.check(identity) is expected
    assert Requirement().empty and not Requirement.build(roles=["a"]).empty


async def test_missing_scope_is_403_insufficient_scope_with_challenge(tmp_path: Path) -> None:
    """A key without the rule's scope gets 403 insufficient_scope and an RFC 6750 challenge."""
    text = SEED_POLICY.replace(
        'authenticate = ["keys", "session"]',
        'authenticate = ["keys", "session"]\nrequire.scopes = ["reports:write"]',
    )
    app = guarded(tmp_path, text)
    r = await call(app, raw_path=b"/api/v1/reports", headers=[("x-api-key", API_KEY)])
    assert r.status == 403
    assert r.json()["code"] == "insufficient_scope"
    assert r.header("www-authenticate") == 'Bearer realm="edgeauth", error="insufficient_scope"'
    r = await call(app, raw_path=b"/api/v1/reports", headers=[("x-api-key", ADMIN_KEY)])
    assert r.status == 200


async def test_claims_requirement_on_jwt(tmp_path: Path) -> None:
    """require.claims compares verified JWT claims for equality."""
    text = SEED_POLICY.replace('require.roles = ["admin"]', 'require.claims = { tenant = "acme" }')
    app = guarded(tmp_path, text)
    ok = session_token(tenant="acme")
    other = session_token(tenant="evil")
    assert (
        await call(app, raw_path=b"/api/admin/x", headers=[("cookie", f"session={ok}")])
    ).status == 200
    r = await call(app, raw_path=b"/api/admin/x", headers=[("cookie", f"session={other}")])
    assert r.status == 403
    assert r.json()["code"] == "forbidden"
