"""The shared case table (tests/cases.py) against the middleware and the proxy.

Besides each case's answer, both front-ends are held to the audit's promise
(docs/policy.md, "Audit events"): every denial is one event, with the
answer's request id and code, whichever layer made it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edgeauth import EdgeAuth, load_policy

from . import servers
from .cases import CASES, POLICY, SERVER_SETTINGS, Case, check
from .helpers import RawRequest, RecordingAudit, Response, call, echo_app, write_policy


class Recorder:
    """The echo app, remembering what each request looked like when it arrived."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(
            {
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [
                    [n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]
                ],
            }
        )
        await echo_app(scope, receive, send)


def denied(response: Response) -> bool:
    """Did edgeauth deny the request (an error, or a page's login redirect)?"""
    return response.status >= 400 or response.status in (302, 303)


def audited(response: Response, events: list[dict[str, Any]]) -> None:
    """A denial the front-end answered is audited exactly once, with its code."""
    if not denied(response):
        return
    rid = response.header("x-request-id")
    assert rid, response.headers
    found = [e for e in events if e["request_id"] == rid and e["outcome"] == "deny"]
    assert len(found) == 1, (rid, response.status, found)
    assert found[0]["status"] == response.status
    if response.header("content-type") == "application/json":
        assert found[0]["code"] == response.json()["code"]


@pytest.fixture(scope="module")
def middleware(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[EdgeAuth, Recorder, RecordingAudit]:
    folder = tmp_path_factory.mktemp("middleware")
    text = servers.server_section(0, None, **SERVER_SETTINGS) + POLICY
    recorder, audit = Recorder(), RecordingAudit()
    app = EdgeAuth(recorder, policy=load_policy(write_policy(folder, text)), audit=audit)
    return app, recorder, audit


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, servers.Process, servers.Process]]:
    folder = tmp_path_factory.mktemp("proxy")
    with servers.upstream("echo", folder) as upstream:
        port = servers.free_port()
        text = servers.server_section(port, upstream.url, **SERVER_SETTINGS) + POLICY
        with servers.edgeauth(write_policy(folder, text), port, dual_stack=True) as ea:
            servers.upstream_log(upstream)  # start from an empty record
            yield port, upstream, ea


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_middleware(
    case: Case, middleware: tuple[EdgeAuth, Recorder, RecordingAudit]
) -> None:
    """The middleware gives the table's outcome for this request."""
    app, recorder, audit = middleware
    recorder.seen.clear()
    request = RawRequest(
        method=case.method,
        raw_path=case.path,
        query=case.query,
        headers=case.request_headers,
        client=(case.peer, 40000),
        body=case.body,
    )
    response = await call(app, request)
    assert len(recorder.seen) <= 1
    check(case, response, recorder.seen[0] if recorder.seen else None)
    audited(response, audit.events)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_proxy(case: Case, proxy: tuple[int, servers.Process, servers.Process]) -> None:
    """edgeauth serve gives the table's outcome for this request, over real sockets."""
    port, upstream, ea = proxy
    response = servers.request(
        port, case.method, case.target, case.request_headers, case.body, host=case.peer
    )
    seen = [r for r in servers.upstream_log(upstream) if r["type"] == "http"]
    assert len(seen) <= 1
    check(case, response, seen[0] if seen else None)
    if denied(response):
        rid = response.header("x-request-id")
        assert rid, response.headers
        audited(response, servers.audit_events(ea, rid))
