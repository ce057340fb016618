"""The seed's examples (protecting-api-routes.md), with DESIGN.md's statuses."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edgeauth import EdgeAuth

from .helpers import ADMIN_KEY, API_KEY, guarded, session_token


@pytest.fixture
def app(tmp_path: Path) -> EdgeAuth:
    return guarded(tmp_path)


@pytest.fixture
async def client(app: EdgeAuth) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")


async def test_api_route_without_cookie_gets_json_401(client: httpx.AsyncClient) -> None:
    """An API route answers 401 JSON with an error field, not a redirect."""
    r = await client.get("/api/protected/data")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == "missing_credentials"
    assert body["error"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["www-authenticate"] == 'Bearer realm="edgeauth"'


async def test_page_route_without_cookie_redirects_to_login(client: httpx.AsyncClient) -> None:
    """A page route redirects to the login URL with the return path."""
    r = await client.get("/dashboard")
    assert r.status_code == 302
    assert r.headers["location"] == "/login?next=%2Fdashboard"


async def test_missing_bearer_header_is_401(client: httpx.AsyncClient) -> None:
    """An external-service route without Authorization answers 401 JSON."""
    r = await client.get("/api/v1/reports")
    assert r.status_code == 401
    assert r.json()["code"] == "missing_credentials"


async def test_wrong_api_key_is_401_invalid_token(client: httpx.AsyncClient) -> None:
    """A wrong key is 401 invalid_token (the seed says 403; DESIGN.md settles 401)."""
    r = await client.get("/api/v1/reports", headers={"authorization": "Bearer not-a-real-key"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer realm="edgeauth", error="invalid_token"'


async def test_valid_api_key_reaches_handler_with_identity_headers(
    client: httpx.AsyncClient,
) -> None:
    """A valid API key passes, and the handler gets x-user-id and x-user-role."""
    for headers in ({"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}):
        r = await client.get("/api/v1/reports", headers=headers)
        assert r.status_code == 200
        seen = dict(r.json()["headers"])
        assert seen["x-user-id"] == "svc-reporting"
        assert seen["x-user-role"] == "service"


async def test_session_cookie_passes_user_info_as_headers(client: httpx.AsyncClient) -> None:
    """The seed's jwtVerify + headers example: userId and role reach the route handler."""
    token = session_token("alice", ("user", "editor"))
    r = await client.get("/api/protected/data", headers={"cookie": f"session={token}"})
    assert r.status_code == 200
    seen = dict(r.json()["headers"])
    assert seen["x-user-id"] == "alice"
    assert seen["x-user-role"] == "user,editor"


async def test_invalid_session_cookie_is_401(client: httpx.AsyncClient) -> None:
    """A session cookie that does not verify is 401 invalid_token."""
    bad = session_token(secret="another-secret-that-is-also-long-enough-xx")
    r = await client.get("/api/protected/data", headers={"cookie": f"session={bad}"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"


async def test_insufficient_role_is_403(client: httpx.AsyncClient) -> None:
    """401 for missing auth, 403 for insufficient permissions."""
    alice, root = session_token("alice", ("user",)), session_token("root", ("admin",))
    r = await client.get("/api/admin/users", headers={"cookie": f"session={alice}"})
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"
    r = await client.get("/api/admin/users", headers={"cookie": f"session={root}"})
    assert r.status_code == 200


async def test_cors_preflight_is_answered_at_the_edge(client: httpx.AsyncClient) -> None:
    """OPTIONS preflight from a listed origin gets 204 and the grant, without credentials."""
    r = await client.options(
        "/api/v1/reports",
        headers={"origin": "https://app.example.com", "access-control-request-method": "GET"},
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "GET" in r.headers["access-control-allow-methods"]
    assert r.headers["vary"] == "Origin"


async def test_cors_preflight_from_unlisted_origin_is_403_without_cors_headers(
    client: httpx.AsyncClient,
) -> None:
    """An unlisted origin's preflight is refused with no CORS header at all."""
    r = await client.options(
        "/api/v1/reports",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert r.status_code == 403
    assert not [h for h in r.headers if h.startswith("access-control-")]


async def test_cors_headers_on_denials_and_on_app_responses(client: httpx.AsyncClient) -> None:
    """Browser code can read the 401 JSON; the app's own Access-Control-* is replaced."""
    origin = {"origin": "https://app.example.com"}
    denied = await client.get("/api/v1/reports", headers=origin)
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "https://app.example.com"
    allowed = await client.get("/api/v1/reports", headers={**origin, "x-api-key": API_KEY})
    assert allowed.status_code == 200
    # The echo app sends "access-control-allow-origin: *"; edgeauth replaces it.
    assert allowed.headers.get_list("access-control-allow-origin") == ["https://app.example.com"]


async def test_public_login_endpoint_needs_no_credentials(client: httpx.AsyncClient) -> None:
    """The login endpoint is public (POST only)."""
    r = await client.post("/api/login", json={"username": "alice"})
    assert r.status_code == 200
    r = await client.get("/api/login")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


async def test_scopes_come_through_for_api_keys(client: httpx.AsyncClient) -> None:
    """API key scopes are part of the identity the app receives."""
    r = await client.get("/api/v1/reports", headers={"x-api-key": ADMIN_KEY})
    assert r.status_code == 200
    assert r.json()["subject"] == "svc-admin"
