"""What the runners share: the recording app, the checks every answer must pass,
and the translation of a case into a gateway's decision request.

:func:`check_safe` runs on every response of every case, whatever the case is
about: a response edgeauth wrote names no library, carries no trace and no
credential, a ``Location`` is always a same-site relative path, and an audit
event never holds a credential (CWE-209, CWE-532, CWE-601).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgeauth.model import RequestView
from edgeauth.paths import canonicalize

from ..helpers import RawRequest, Response, echo_app
from .cases_leakage import leaks
from .common import TRUSTED, Attack

IDENTITY_HEADERS = ("x-user-id", "x-user-role")
GATEWAY_PATH = b"/_edgeauth/auth"
_URI_HEADERS = {
    "nginx": ("X-Original-URI", "X-Original-Method"),
    "caddy": ("X-Forwarded-Uri", "X-Forwarded-Method"),
}
# What each gateway sets on the decision request itself, replacing the client's
# copy of the same name (docs/deploy: nginx.conf, Caddyfile, envoy.md).
_GATEWAY_SETS = {
    "nginx": frozenset(
        {
            "host",
            "content-length",
            "connection",
            "transfer-encoding",
            "x-original-uri",
            "x-original-method",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-for",
        }
    ),
    "caddy": frozenset(
        {
            "host",
            "content-length",
            "connection",
            "upgrade",
            "transfer-encoding",
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-for",
        }
    ),
    "envoy": frozenset(
        {
            "content-length",
            "connection",
            "transfer-encoding",
            "x-forwarded-proto",
            "x-forwarded-for",
        }
    ),
}
_CREDENTIAL_PLACES = frozenset({"authorization", "x-api-key"})
_CREDENTIAL_PARAMS = ("access_token", "token", "session", "api_key", "key")


def _forwarding(name: str) -> bool:
    normal = name.replace("_", "-")
    return normal == "forwarded" or normal.startswith("x-forwarded-")


class Recorder:
    """The echo app, remembering how each request looked when it arrived."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append(
                {
                    "method": scope["method"],
                    "raw_path": scope["raw_path"].decode("latin-1"),
                    "query": scope["query_string"].decode("latin-1"),
                    "headers": [
                        [n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]
                    ],
                }
            )
        await echo_app(scope, receive, send)


def credentials(headers: Iterable[tuple[str, str]], query: bytes = b"") -> list[str]:
    """Every credential a request carries (cookie values, bearer tokens, API keys,
    query values), long enough that finding one in an answer cannot be chance."""
    params = parse_qs(query.decode("latin-1"))
    found = [v for name in _CREDENTIAL_PARAMS for v in params.get(name, [])]
    for name, value in headers:
        lowered = name.lower().replace("_", "-")
        if lowered == "cookie":
            found += [pair.partition("=")[2].strip().strip('"') for pair in value.split(";")]
        elif lowered == "authorization":
            found.append(value.partition(" ")[2].strip())
        elif lowered == "x-api-key":
            found.append(value.strip())
    return [c for c in found if len(c) >= 16]


def check_safe(
    case: Attack,
    response: Response,
    *,
    answered_by_edgeauth: bool,
    audit: Sequence[Mapping[str, Any]] = (),
) -> None:
    """The checks every response passes, whatever the case is about."""
    sent = credentials(case.request_headers, case.query)
    if answered_by_edgeauth:
        text = "\n".join(f"{n}: {v}" for n, v in response.headers)
        text += "\n" + response.body.decode("latin-1")
        found = leaks(text, sent)
        assert not found, (case.id, "leaked", found)
        json_body = response.header("content-type") == "application/json" and response.body
        if response.status >= 400 and json_body:
            body = response.json()
            assert set(body) == {"error", "code", "request_id"}, (case.id, body)
            assert isinstance(body["code"], str), case.id
    location = response.header("location") or response.header("x-edgeauth-location")
    if location is not None:
        check_relative(case.id, location)
    for event in audit:
        found = leaks(json.dumps(event), sent, markers=False)
        assert not found, (case.id, "credential in the audit event", found)


def check_relative(case_id: str, location: str) -> None:
    """A login redirect stays on the site: a relative path whose ``next`` is one too
    (CWE-601; RFC 3986 §4.2: '//host' is a network-path reference)."""
    assert location.startswith("/"), (case_id, location)
    assert not location.startswith(("//", "/\\")), (case_id, location)
    for value in parse_qs(urlsplit(location).query).get("next", []):
        # Browsers drop tab, CR and LF anywhere in a URL (WHATWG URL Standard,
        # basic URL parser), so the value must be safe with them removed too.
        for seen in (value, re.sub(r"[\t\n\r]", "", value)):
            assert seen.startswith("/"), (case_id, value)
            assert seen[1:2] not in ("/", "\\"), (case_id, value)
        path = value.partition("?")[0]
        assert "\\" not in path and not any(ord(c) < 0x20 or c == "\x7f" for c in path), (
            case_id,
            value,
        )


# Forward-auth ------------------------------------------------------------------


def gateway_request(case: Attack, dialect: str) -> RawRequest:
    """The decision request a gateway of ``dialect`` sends edgeauth for ``case``.

    The gateway replaces what it sets itself (docs/deploy) and passes the
    client's other headers on; the client is the case's peer, as the gateway
    sees it; the body never goes to the decision endpoint.
    """
    client = case.request_headers
    hosts = [v for n, v in client if n.lower() == "host"]
    kept = [(n, v) for n, v in client if n.lower() not in _GATEWAY_SETS[dialect]]
    forwarding = [("x-forwarded-proto", "http"), ("x-forwarded-for", case.peer)]
    if dialect == "envoy":
        return RawRequest(
            method=case.method,
            raw_path=GATEWAY_PATH + case.path,
            query=case.query,
            headers=[*kept, *forwarding],
            client=(TRUSTED, 40000),
        )
    uri, method = _URI_HEADERS[dialect]
    own = [(uri, case.target.decode("latin-1")), (method, case.method)]
    own += [("host", "edgeauth.internal"), *(("x-forwarded-host", h) for h in hosts)]
    return RawRequest(
        raw_path=GATEWAY_PATH, headers=[*kept, *own, *forwarding], client=(TRUSTED, 40000)
    )


def check_forward_auth(
    case: Attack, dialect: str, response: Response, view: RequestView | None
) -> None:
    """Assert the gateway gets ``case``'s outcome, read the way the dialect carries it."""
    status, code, location = response.status, None, response.header("location")
    carried = response.header("x-edgeauth-status")
    if dialect == "nginx" and carried is not None:
        assert response.status in (401, 403), (case.id, response.status)
        assert response.status == (403 if carried == "403" else 401), (case.id, carried)
        status, code = int(carried), response.header("x-edgeauth-code")
        location = response.header("x-edgeauth-location")
    elif response.header("content-type") == "application/json":
        code = response.json()["code"]
    if case.forwarded:
        assert status == 200, (case.id, status, code, response.body[:200])
    else:
        assert status == case.status, (case.id, status, code, response.body[:200])
        if case.code is not None:
            assert code == case.code, (case.id, code)
        assert response.header("x-request-id"), case.id
    for name, value in case.response_has.items():
        got = location if name == "location" else response.header(name)
        assert got == value, (case.id, name, got)
    for name in case.response_lacks:
        assert response.header(name) is None, (case.id, name)
    if not case.forwarded:
        return
    assert view is not None, (case.id, "no decision")
    spoofed = {n.lower().replace("_", "-"): v for n, v in case.headers}
    for name in IDENTITY_HEADERS:
        values = response.header_all(name)
        assert len(values) == 1, (case.id, name, values)  # a gateway copying it overwrites
        if name in case.upstream_has:
            assert values == [case.upstream_has[name]], (case.id, name, values)
        else:
            assert values[0] == "" or values[0] != spoofed.get(name), (case.id, name, values)
    withheld = response.header(
        "x-envoy-auth-headers-to-remove" if dialect == "envoy" else "x-edgeauth-withheld"
    )
    for name in case.upstream_lacks:
        if name in _CREDENTIAL_PLACES:
            assert withheld is not None and name in withheld, (case.id, name, withheld)
        elif not _forwarding(name) and name not in IDENTITY_HEADERS:
            # Forwarding headers are the gateway's to set; their effect, the
            # client address, is checked through upstream_not_containing.
            assert name not in view.headers, (case.id, name, "reached the decision")
    for name, value in case.upstream_has.items():
        if name == "host":
            assert view.headers.get("host") == (value,), (case.id, view.headers.get("host"))
        elif name not in IDENTITY_HEADERS:
            raise AssertionError(f"{case.id}: no forward-auth reading of upstream_has[{name!r}]")
    if case.upstream_path is not None:
        assert canonicalize(view.raw_path).raw == case.upstream_path, (case.id, view.raw_path)
    if case.upstream_query is not None:
        assert view.query.decode("latin-1") == case.upstream_query, case.id
    for name, text in case.upstream_not_containing.items():
        if name == "x-forwarded-for":
            assert text not in (view.client or ""), (case.id, view.client)
        else:
            assert all(text not in v for v in view.headers.get(name, ())), (case.id, name)
