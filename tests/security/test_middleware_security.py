"""Every attack case through the ASGI middleware, in process, with exact scopes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeauth import EdgeAuth, load_policy
from edgeauth.errors import ConfigError

from .. import servers
from ..cases import check, cookie
from ..helpers import RawRequest, RecordingAudit, break_verification, call, session_token
from ..jwks_server import JwksServer, public_jwk
from . import cases_ssrf
from .cases_leakage import leaks
from .common import (
    MIDDLEWARE_SETTINGS,
    PARTNER_KEY,
    SECRET,
    Attack,
    partner_claims,
    rs,
    write_security_policy,
)
from .harness import Recorder, check_safe
from .table import ALL, case_id


@dataclass
class Guarded:
    app: EdgeAuth
    recorder: Recorder
    audit: RecordingAudit


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Guarded:
    folder = tmp_path_factory.mktemp("middleware")
    server = servers.server_section(0, None, **MIDDLEWARE_SETTINGS)
    policy = load_policy(write_security_policy(folder, server))
    recorder, audit = Recorder(), RecordingAudit()
    return Guarded(EdgeAuth(recorder, policy=policy, audit=audit), recorder, audit)


def raw_request(case: Attack) -> RawRequest:
    return RawRequest(
        method=case.method,
        raw_path=case.path,
        query=case.query,
        headers=case.request_headers,
        client=(case.peer, 40000),
        body=case.body,
    )


async def run(case: Attack, guarded: Guarded) -> None:
    """Send ``case`` through the middleware twice; check each answer and what
    the app saw. The second time every memo and the token cache have seen the
    request: it is the short path's (``Engine.settled``) chance to answer."""
    expected = case.expected("middleware")
    for _ in range(2):
        guarded.recorder.seen.clear()
        guarded.audit.events.clear()
        response = await call(guarded.app, raw_request(expected))
        seen = guarded.recorder.seen
        assert len(seen) <= 1
        check(expected, response, seen[0] if seen else None)
        check_safe(expected, response, answered_by_edgeauth=not seen, audit=guarded.audit.events)


@pytest.mark.parametrize("case", ALL, ids=case_id)
async def test_attack(case: Attack, guarded: Guarded) -> None:
    """The middleware answers the attack as the table says, and leaks nothing."""
    await run(case, guarded)


async def test_nothing_in_a_request_makes_edgeauth_fetch_a_url(guarded: Guarded) -> None:
    """No header, token or target makes the middleware connect anywhere."""
    with cases_ssrf.Listener() as listener:
        for case in cases_ssrf.cases(listener.url):
            await run(case, guarded)
        assert listener.connections() == 0


IDP_ISSUER = "https://idp.test"


def idp_policy(jwks_url: str) -> str:
    """An authenticator whose keys come from a JWKS URL, on /api/idp/**."""
    return f"""
[authenticators.idp]
type = "jwt"
from = "bearer"
algorithms = ["RS256"]
jwks_url = "{jwks_url}"
issuer = "{IDP_ISSUER}"
audience = "edge-api"
jwks_cooldown = 30

[[rules]]
id = "idp"
match = "/api/idp/**"
authenticate = ["idp"]
"""


async def bearer(app: EdgeAuth, path: bytes, token: str) -> int:
    """The status of a GET of ``path`` with ``token`` as the Bearer credential."""
    headers = [("host", "app.test"), ("authorization", f"Bearer {token}")]
    return (await call(app, RawRequest(raw_path=path, headers=headers))).status


async def test_token_urls_and_unknown_kids_fetch_only_the_configured_jwks(
    tmp_path: Path,
) -> None:
    """jku/x5u in tokens are never fetched, and a flood of unknown kids costs at most
    one refresh of the configured JWKS per cooldown (RFC 8725 §3.10; CWE-918, CWE-400)."""
    async with JwksServer({"keys": [public_jwk(PARTNER_KEY, "idp-1", alg="RS256")]}) as idp:
        server = servers.server_section(0, None, **MIDDLEWARE_SETTINGS)
        policy = load_policy(write_security_policy(tmp_path, server, idp_policy(idp.url)))
        recorder = Recorder()
        app = EdgeAuth(recorder, policy=policy, audit=RecordingAudit())
        claims = partner_claims(iss=IDP_ISSUER)
        try:
            with cases_ssrf.Listener() as listener:
                urls = {"jku": listener.url, "x5u": listener.url}
                statuses = set()
                for i in range(20):
                    for header in (
                        {"alg": "RS256", "kid": f"unknown-{i}", **urls},
                        {"alg": "RS256", "kid": f"rotated-{i}"},
                    ):
                        statuses.add(await bearer(app, b"/api/idp/x", rs(header, claims)))
                valid = rs({"alg": "RS256", "kid": "idp-1"}, claims)
                assert statuses == {401}
                assert await bearer(app, b"/api/idp/x", valid) == 200
                assert recorder.seen[-1]["raw_path"] == "/api/idp/x"
                assert listener.connections() == 0
            assert idp.fetches <= 2  # the first fetch, and one refresh for unknown kids
        finally:
            await policy.aclose()


async def test_internal_error_is_a_generic_500(
    guarded: Guarded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside the decision is a bare JSON 500: no exception text, type or
    secret, and the app is not called (fail closed; CWE-209)."""

    session = guarded.app.policy.authenticators["session"]
    break_verification(monkeypatch, session, f"boom {SECRET} /srv/app/settings.py line 1")
    token = session_token("alice", purpose="internal-error")  # not in the token cache
    guarded.recorder.seen.clear()
    guarded.audit.events.clear()
    r = await call(
        guarded.app,
        RawRequest(raw_path=b"/api/protected/me", headers=[("host", "app.test"), cookie(token)]),
    )
    assert r.status == 500
    assert r.json()["code"] == "internal_error"
    text = "\n".join(f"{n}: {v}" for n, v in r.headers) + r.body.decode()
    assert not leaks(text, [token]) and "boom" not in text
    assert guarded.recorder.seen == []
    assert "boom" not in json.dumps(guarded.audit.events)


def test_wildcard_origin_with_credentials_is_refused_at_load(tmp_path: Path) -> None:
    """A CORS rule may not grant every origin with credentials (Fetch standard §3.2.5;
    J. Kettle 2016): the policy does not load."""
    path = write_security_policy(tmp_path)
    text = path.read_text()
    wildcard = text.replace('origins = ["*"] }', 'origins = ["*"], credentials = true }')
    assert wildcard != text
    path.write_text(wildcard)
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert "credentials" in str(raised.value)
