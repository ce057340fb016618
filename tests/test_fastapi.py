"""The FastAPI dependency: the identity, or edgeauth's own 401 JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from edgeauth import EdgeAuth, Identity, IdentityRequired, load_policy
from edgeauth.fastapi import current_identity, optional_identity

from .helpers import SEED_POLICY, RecordingAudit, session_token, write_policy

POLICY = SEED_POLICY.replace(
    'match = ["/", "/login", "/public/**"]\npublic = true',
    'match = ["/", "/login", "/public/**"]\npublic = true\nauthenticate = ["session"]',
)


def make_app() -> FastAPI:
    api = FastAPI()

    @api.get("/api/protected/me")
    def me(identity: Annotated[Identity, Depends(current_identity)]) -> dict[str, object]:
        return {"subject": identity.subject, "roles": list(identity.roles)}

    @api.get("/public/me")
    def public_me(identity: Annotated[Identity, Depends(current_identity)]) -> dict[str, object]:
        return {"subject": identity.subject}

    @api.get("/public/maybe")
    def maybe(
        identity: Annotated[Identity | None, Depends(optional_identity)],
    ) -> dict[str, object]:
        return {"subject": identity.subject if identity else None}

    return api


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture(params=["wrapped", "add_middleware"])
def client(
    request: pytest.FixtureRequest, tmp_path: Path, audit: RecordingAudit
) -> httpx.AsyncClient:
    policy = load_policy(write_policy(tmp_path, POLICY))
    api = make_app()
    if request.param == "wrapped":
        app = EdgeAuth(api, policy=policy, audit=audit)
        transport = httpx.ASGITransport(app=app)
    else:
        api.add_middleware(EdgeAuth, policy=policy, audit=audit)
        transport = httpx.ASGITransport(app=api)
    return httpx.AsyncClient(transport=transport, base_url="http://app.test")


async def test_dependency_returns_the_identity(client: httpx.AsyncClient) -> None:
    """current_identity gives the verified Identity to the route."""
    r = await client.get("/api/protected/me", headers={"cookie": f"session={session_token()}"})
    assert r.status_code == 200
    assert r.json() == {"subject": "alice", "roles": ["user"]}


async def test_dependency_without_identity_answers_edgeauths_401(
    client: httpx.AsyncClient, audit: RecordingAudit
) -> None:
    """On a public route without a credential, current_identity answers
    edgeauth's JSON, not FastAPI's detail, and the denial is audited."""
    r = await client.get("/public/me")
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "missing_credentials"
    assert "detail" not in body
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["www-authenticate"] == 'Bearer realm="edgeauth"'
    # The headers of every other denial: no caching, no content sniffing.
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-type"] == "application/json"
    [event] = audit.events
    assert event["request_id"] == body["request_id"]
    assert (event["path"], event["code"], event["status"]) == (
        "/public/me",
        "missing_credentials",
        401,
    )
    assert event["reason"] == "the app requires an identity"


async def test_optional_identity(client: httpx.AsyncClient) -> None:
    """optional_identity is None for anonymous requests."""
    assert (await client.get("/public/maybe")).json() == {"subject": None}
    r = await client.get("/public/maybe", headers={"cookie": f"session={session_token('bob')}"})
    assert r.json() == {"subject": "bob"}


def login_app() -> FastAPI:
    api = FastAPI()

    @api.post("/api/login")
    async def login(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    return api


@pytest.mark.parametrize("style", ["wrapped", "add_middleware"])
async def test_streamed_body_over_max_body_is_413_json_even_when_wrapping_fastapi(
    tmp_path: Path, style: str
) -> None:
    """A body without Content-Length crossing max_body is 413 JSON and audited, however EdgeAuth is added."""
    audit = RecordingAudit()
    text = POLICY.replace('methods = ["POST"]', 'methods = ["POST"]\nmax_body = 10')
    policy = load_policy(write_policy(tmp_path, text))
    api = login_app()
    if style == "wrapped":
        app: object = EdgeAuth(api, policy=policy, audit=audit)
    else:
        api.add_middleware(EdgeAuth, policy=policy, audit=audit)
        app = api

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"0123456789"

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as c:
        r = await c.post("/api/login", content=chunks())
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        assert audit.events[-1]["code"] == "payload_too_large"
        r = await c.post("/api/login", content=b"short")
        assert r.json() == {"length": 5}


async def test_identity_required_on_a_cors_rule_carries_its_cors_headers(tmp_path: Path) -> None:
    """The 401 for a route that needs an identity, on a public rule with cors,
    carries the rule's CORS headers (browser code can read it) and is audited
    under the rule."""

    async def needs_identity(scope: dict[str, object], receive: object, send: object) -> None:
        raise IdentityRequired

    policy = SEED_POLICY.replace(
        'match = ["/", "/login", "/public/**"]',
        'match = ["/", "/login", "/public/**"]\ncors = { origins = ["https://app.example.com"] }',
    )
    audit = RecordingAudit()
    app = EdgeAuth(needs_identity, policy=load_policy(write_policy(tmp_path, policy)), audit=audit)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        r = await client.get("/public/me", headers={"origin": "https://app.example.com"})
    assert r.status_code == 401
    assert r.json()["code"] == "missing_credentials"
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["www-authenticate"] == 'Bearer realm="edgeauth"'
    [event] = audit.events
    assert (event["rule"], event["reason"]) == ("public", "the app requires an identity")
