"""Property: the path the app receives always matches the rule that decided the request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeauth import EdgeAuth, load_policy
from edgeauth.paths import canonicalize

from .helpers import RecordingAudit, call, echo_app, write_policy

POLICY = """
[audit]
allows = true

[[rules]]
id = "admin"
match = "/api/admin/**"
public = true

[[rules]]
id = "v1-one"
match = "/api/v1/*"
public = true

[[rules]]
id = "api"
match = "/api/**"
public = true

[[rules]]
id = "me"
match = "/api/@me"
public = true

[[rules]]
id = "exact"
match = "/public/a.txt"
public = true

[[rules]]
id = "home"
match = "/"
public = true
"""

SEGMENTS = st.sampled_from(
    [
        "api",
        "admin",
        "v1",
        "public",
        "a.txt",
        "x",
        "",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%61dmin",
        "%41PI",
        "%7Ex",
        "caf%C3%A9",
        "café",
        "%70ublic",
        "a%2Etxt",
        "%20",
        "API",
        "Admin",
        "%40me",
        "@me",
    ]
)


@settings(
    max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(SEGMENTS, min_size=0, max_size=7))
def test_forwarded_path_matches_the_deciding_rule(tmp_path: Path, segments: list[str]) -> None:
    """Whatever the encoding tricks, the rule recomputed on the app's path is the rule that decided."""
    raw = ("/" + "/".join(segments)).encode()
    policy = load_policy(write_policy(tmp_path, POLICY))
    audit = RecordingAudit()
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(scope)
        await echo_app(scope, receive, send)

    response = asyncio.run(call(EdgeAuth(app, policy, audit=audit), raw_path=raw))
    event = audit.events[-1]
    if response.status in (400, 404):
        assert not received  # malformed, or no rule and default deny: the app never runs
        if response.status == 404:
            assert policy.rules.match("GET", "", canonicalize(raw).decoded) is None
        return
    (scope,) = received
    forwarded = scope["raw_path"]
    again = canonicalize(forwarded)
    assert again.raw.encode() == forwarded  # already canonical: nothing left to re-interpret
    assert again.decoded == scope["path"]
    rule = policy.rules.match("GET", "", scope["path"])
    assert (rule.id if rule else None) == event["rule"]


def _bearer_by_split(value: str) -> str | None:
    """The Bearer credential in an Authorization value, by its definition: the
    value's first word is the scheme, any whitespace after it."""
    parts = value.split(None, 1)
    if not parts or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() if len(parts) > 1 else ""


@given(
    st.lists(
        st.sampled_from(
            [
                "Bearer",
                "bearer",
                "BEARER",
                "Basic",
                "Bearerx",
                " ",
                "\t",
                "\xa0",
                "\x1c",
                "\r",
                "\x0b",
                "\x85",
                "\u2028",
                "\u3000",
                "tok.en",
                "=",
                "",
            ]
        ),
        max_size=6,
    ).map("".join)
)
def test_the_bearer_credential_is_read_as_its_definition_says(value: str) -> None:
    """Reading a Bearer credential (with its shortcut for the usual "Bearer "
    spelling) gives what splitting off the first word gives, with whitespace
    of many kinds (ASCII, Latin-1, Unicode)."""
    from edgeauth.pipeline import _bearer

    assert _bearer((value,)) == _bearer_by_split(value)
    assert _bearer(("Bearer " + value,)) == _bearer_by_split("Bearer " + value)
