"""Audit events: one JSON line per denial (and allow on request), never a secret."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import pytest

from edgeauth.audit import LoggingAuditSink, fingerprint

from .helpers import API_KEY, SECRET, SEED_POLICY, call, guarded, session_token

FIELDS = {
    "time",
    "request_id",
    "method",
    "path",
    "rule",
    "outcome",
    "code",
    "status",
    "reason",
    "subject",
    "client",
    "authenticator",
    "key_id",
    "fingerprint",
}


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgeauth.audit"]


async def test_each_denial_is_one_json_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A denial logs one JSON object with the documented fields; allows are silent by default."""
    app = guarded(tmp_path)
    token = session_token("alice", ("user",))
    with caplog.at_level(logging.INFO, logger="edgeauth.audit"):
        await call(
            app,
            raw_path=b"/api/admin/users",
            headers=[("cookie", f"session={token}")],
            client=("::1", 9),
        )
        await call(app, raw_path=b"/api/protected/ok", headers=[("cookie", f"session={token}")])
    (event,) = audit_lines(caplog)
    assert set(event) == FIELDS
    assert event["outcome"] == "deny"
    assert event["code"] == "forbidden"
    assert event["status"] == 403
    assert event["rule"] == "admin"
    assert event["path"] == "/api/admin/users"
    assert event["subject"] == "alice"
    assert event["client"] == "::1"
    assert event["authenticator"] == "session"
    assert event["fingerprint"] == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert caplog.records[0].levelno == logging.WARNING


async def test_allows_are_audited_when_the_policy_asks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """[audit] allows = true logs allowed requests too, at INFO."""
    app = guarded(tmp_path, "[audit]\nallows = true\n" + SEED_POLICY)
    with caplog.at_level(logging.INFO, logger="edgeauth.audit"):
        await call(app, raw_path=b"/api/v1/x", headers=[("x-api-key", API_KEY)])
    (event,) = audit_lines(caplog)
    assert event["outcome"] == "allow"
    assert event["key_id"] == "reporting"
    assert event["subject"] == "svc-reporting"


async def test_no_credential_or_secret_ever_reaches_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens, cookies, API keys and the HMAC secret never appear in audit or error logs."""
    app = guarded(tmp_path, "[audit]\nallows = true\n" + SEED_POLICY)
    good = session_token()
    expired = session_token(lifetime=-600)
    forged = session_token(secret="x" * 40)
    wrong_key = "eak_this-key-does-not-exist-anywhere-000000000"
    secrets_sent = [good, expired, forged, API_KEY, wrong_key, SECRET]
    with caplog.at_level(logging.DEBUG):
        for headers in (
            [("cookie", f"session={good}")],
            [("cookie", f"session={expired}")],
            [("cookie", f"session={forged}")],
            [("authorization", f"Bearer {API_KEY}")],
            [("x-api-key", wrong_key)],
            [("authorization", f"Bearer {good}"), ("x-api-key", API_KEY)],
        ):
            for path in (b"/api/protected/x", b"/api/v1/x", b"/nowhere"):
                await call(
                    app, raw_path=path, query=b"token=" + good.encode()[:20], headers=headers
                )
    text = caplog.text
    assert len(audit_lines(caplog)) == 18
    for secret in secrets_sent:
        assert secret not in text
        # Not even a long piece of it (a JWT's signature part, a key's random part).
        assert secret[-16:] not in text
    assert fingerprint(wrong_key) in text


def test_logging_sink_skips_work_when_disabled() -> None:
    """With the audit logger disabled, nothing is formatted or written."""
    logger = logging.getLogger("edgeauth.audit.test-disabled")
    logger.setLevel(logging.CRITICAL)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    LoggingAuditSink(logger).emit({"outcome": "deny"})
    assert records == []


def test_request_ids_are_unique_and_do_not_count_requests() -> None:
    """Request ids are 16 hex digits, unique, and consecutive ones are not consecutive numbers."""
    from edgeauth.pipeline import request_ids

    make = request_ids()
    ids = [make() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    steps = {int(b, 16) - int(a, 16) for a, b in itertools.pairwise(ids)}
    assert 1 not in steps
