"""The shared case table (tests/cases.py) against the middleware and the proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edgeauth import EdgeAuth, load_policy

from . import servers
from .cases import CASES, POLICY, SERVER_SETTINGS, Case, check
from .helpers import RawRequest, call, echo_app, write_policy


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


@pytest.fixture(scope="module")
def middleware(tmp_path_factory: pytest.TempPathFactory) -> tuple[EdgeAuth, Recorder]:
    folder = tmp_path_factory.mktemp("middleware")
    text = servers.server_section(0, None, **SERVER_SETTINGS) + POLICY
    recorder = Recorder()
    return EdgeAuth(recorder, policy=load_policy(write_policy(folder, text))), recorder


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, servers.Process]]:
    folder = tmp_path_factory.mktemp("proxy")
    with servers.upstream("echo", folder) as upstream:
        port = servers.free_port()
        text = servers.server_section(port, upstream.url, **SERVER_SETTINGS) + POLICY
        with servers.edgeauth(write_policy(folder, text), port, dual_stack=True):
            servers.upstream_log(upstream)  # start from an empty record
            yield port, upstream


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_middleware(case: Case, middleware: tuple[EdgeAuth, Recorder]) -> None:
    """The middleware gives the table's outcome for this request."""
    app, recorder = middleware
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


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_proxy(case: Case, proxy: tuple[int, servers.Process]) -> None:
    """edgeauth serve gives the table's outcome for this request, over real sockets."""
    port, upstream = proxy
    response = servers.request(
        port, case.method, case.target, case.request_headers, case.body, host=case.peer
    )
    seen = [r for r in servers.upstream_log(upstream) if r["type"] == "http"]
    assert len(seen) <= 1
    check(case, response, seen[0] if seen else None)
