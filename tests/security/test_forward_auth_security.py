"""Every attack case through the forward-auth endpoint, as each gateway would ask.

The case's client request is translated into the dialect's decision request
(nginx: ``X-Original-URI``; Caddy/Traefik: ``X-Forwarded-Uri``; Envoy: the
path appended to the endpoint's), sent from the trusted gateway address, and
the answer is read back the way that gateway reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeauth import load_policy
from edgeauth.forward_auth import ForwardAuthApp

from .. import servers
from ..cases import cookie
from ..helpers import RecordingAudit, SpyEngine, break_verification, call, session_token
from . import cases_ssrf
from .cases_leakage import leaks
from .common import (
    DIALECTS,
    MIDDLEWARE_SETTINGS,
    SECRET,
    Attack,
    forward_auth_section,
    write_security_policy,
)
from .harness import check_forward_auth, check_safe, gateway_request
from .table import ALL, case_id


@dataclass
class Endpoint:
    app: ForwardAuthApp
    engine: SpyEngine
    audit: RecordingAudit
    refusals: RecordingAudit


@pytest.fixture(scope="module", params=DIALECTS)
def endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Endpoint:
    dialect: str = request.param
    folder = tmp_path_factory.mktemp(f"forward-auth-{dialect}")
    server = servers.server_section(0, None, **MIDDLEWARE_SETTINGS)
    policy = load_policy(write_security_policy(folder, server, forward_auth_section(dialect)))
    audit, refusals = RecordingAudit(), RecordingAudit()
    engine = SpyEngine(policy, audit=audit)
    app = ForwardAuthApp(policy, engine, audit=refusals)  # type: ignore[arg-type]
    return Endpoint(app, engine, audit, refusals)


async def run(case: Attack, endpoint: Endpoint) -> None:
    """Ask the endpoint about ``case`` as the gateway would; check the answer."""
    dialect = endpoint.app.dialect
    expected = case.expected(f"forward_auth:{dialect}")
    endpoint.engine.views.clear()
    endpoint.audit.events.clear()
    endpoint.refusals.events.clear()
    response = await call(endpoint.app, gateway_request(expected, dialect))
    view = endpoint.engine.views[-1] if endpoint.engine.views else None
    check_forward_auth(expected, dialect, response, view)
    events = [*endpoint.audit.events, *endpoint.refusals.events]
    check_safe(expected, response, answered_by_edgeauth=True, audit=events)


@pytest.mark.parametrize("case", ALL, ids=case_id)
async def test_attack(case: Attack, endpoint: Endpoint) -> None:
    """The decision endpoint answers the attack as the table says, in the dialect."""
    await run(case, endpoint)


async def test_nothing_in_a_request_makes_edgeauth_fetch_a_url(endpoint: Endpoint) -> None:
    """No header, token or target makes the decision endpoint connect anywhere."""
    with cases_ssrf.Listener() as listener:
        for case in cases_ssrf.cases(listener.url):
            await run(case, endpoint)
        assert listener.connections() == 0


async def test_internal_error_is_a_generic_500(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside the decision is a bare 500 in the dialect: no exception text,
    type or secret (fail closed; CWE-209)."""

    session = endpoint.app.policy.authenticators["session"]
    break_verification(monkeypatch, session, f"boom {SECRET} /srv/app/settings.py line 1")
    token = session_token("alice", purpose="internal-error")  # not in the token cache
    case = Attack("internal-error", b"/api/protected/me", 500, headers=(cookie(token),))
    response = await call(endpoint.app, gateway_request(case, endpoint.app.dialect))
    real = response.header("x-edgeauth-status") or str(response.status)
    assert real == "500"
    assert response.status != 200
    text = "\n".join(f"{n}: {v}" for n, v in response.headers) + response.body.decode()
    assert not leaks(text, [token]) and "boom" not in text
