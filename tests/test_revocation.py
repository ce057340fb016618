"""Revocation without Redis: a JSON file every worker reads, checked from a local copy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeauth import EdgeAuth, load_policy
from edgeauth.errors import AuthUnavailable, StoreUnavailable
from edgeauth.model import Identity
from edgeauth.policy import State
from edgeauth.revocation import (
    GRACE,
    Change,
    FileRevocations,
    RevocationList,
    SubjectRevocation,
    parse_time,
    revoke,
    unrevoke,
)

from .helpers import API_KEY, SEED_POLICY, call, echo_app, guarded, session_token, write_policy


def cookie(token: str) -> tuple[str, str]:
    return ("cookie", f"session={token}")


async def status_code(app: EdgeAuth, token: str) -> tuple[int, str | None]:
    r = await call(app, raw_path=b"/api/protected/x", headers=[cookie(token)])
    return r.status, (r.json().get("code") if r.status != 200 else None)


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_revoked_jti_is_401_revoked(tmp_path: Path) -> None:
    """A token revoked by jti is 401 revoked with the invalid_token challenge; others pass."""
    app = guarded(tmp_path)
    token, other = session_token(jti="j-1"), session_token(jti="j-2")
    assert await status_code(app, token) == (200, None)
    await revoke(app.policy, jti="j-1", expires_at=time.time() + 3600)
    r = await call(app, raw_path=b"/api/protected/x", headers=[cookie(token)])
    assert (r.status, r.json()["code"]) == (401, "revoked")
    assert 'error="invalid_token"' in (r.header("www-authenticate") or "")
    assert await status_code(app, other) == (200, None)


async def test_revoked_token_on_a_page_rule_goes_to_login(tmp_path: Path) -> None:
    """A page rule sends a revoked session to the login page, like an invalid one."""
    app = guarded(tmp_path)
    token = session_token(jti="j-page")
    await revoke(app.policy, jti="j-page")
    r = await call(app, raw_path=b"/dashboard/x", headers=[cookie(token)])
    assert r.status == 302
    assert (r.header("location") or "").startswith("/login?next=")


async def test_subject_revocation_signs_out_everywhere(tmp_path: Path) -> None:
    """Tokens of the subject issued before `before` are revoked; later ones and others pass."""
    app = guarded(tmp_path)
    cut = time.time() - 30
    old = session_token("alice", iat=int(cut) - 60)
    new = session_token("alice", iat=int(cut) + 1)
    bob = session_token("bob", iat=int(cut) - 60)
    await revoke(app.policy, subject="alice", before=cut)
    assert await status_code(app, old) == (401, "revoked")
    assert await status_code(app, new) == (200, None)
    assert await status_code(app, bob) == (200, None)


async def test_api_keys_are_revoked_by_subject_until_lifted(tmp_path: Path) -> None:
    """An API key (no issue time) is revoked with its subject; unrevoke lifts it."""
    app = guarded(tmp_path)
    key = [("x-api-key", API_KEY)]
    assert (await call(app, raw_path=b"/api/v1/x", headers=key)).status == 200
    await revoke(app.policy, subject="svc-reporting")
    r = await call(app, raw_path=b"/api/v1/x", headers=key)
    assert (r.status, r.json()["code"]) == (401, "revoked")
    await unrevoke(app.policy, subject="svc-reporting")
    assert (await call(app, raw_path=b"/api/v1/x", headers=key)).status == 200


async def test_revocations_survive_a_restart(tmp_path: Path) -> None:
    """The file persists: a policy loaded afresh (a restarted server) still refuses the token."""
    app = guarded(tmp_path)
    token = session_token(jti="j-restart")
    await revoke(app.policy, jti="j-restart")
    restarted = EdgeAuth(app.app, policy=load_policy(tmp_path / "edgeauth.toml"))
    assert await status_code(restarted, token) == (401, "revoked")


async def test_every_worker_sees_a_revocation(tmp_path: Path) -> None:
    """Another worker (another policy on the same file) refuses the token soon after."""
    worker_a = guarded(tmp_path)
    worker_b = EdgeAuth(worker_a.app, policy=load_policy(tmp_path / "edgeauth.toml"))
    token = session_token(jti="j-shared")
    assert await status_code(worker_b, token) == (200, None)
    await revoke(worker_a.policy, jti="j-shared")
    deadline = time.monotonic() + 10
    while await status_code(worker_b, token) != (401, "revoked"):
        assert time.monotonic() < deadline, "worker b never saw the revocation"
        await asyncio.sleep(0.05)


def test_the_file_sits_next_to_the_policy_by_default(tmp_path: Path) -> None:
    """Without [state] revocation_file the list is POLICY-STEM.revocations.json beside the policy."""
    policy = load_policy(write_policy(tmp_path))
    assert policy.state.settings.revocation_file == str(tmp_path / "edgeauth.revocations.json")
    text = '[state]\nrevocation_file = "state/revoked.json"\n' + SEED_POLICY
    policy = load_policy(write_policy(tmp_path, text))
    assert policy.state.settings.revocation_file == str(tmp_path / "state/revoked.json")


async def test_the_file_is_plain_json_and_prunes_expired_entries(tmp_path: Path) -> None:
    """Entries are stored with their expiry and dropped by the next write once expired."""
    app = guarded(tmp_path)
    now = time.time()
    await revoke(app.policy, jti="gone", expires_at=now - GRACE - 1, now=now)
    await revoke(app.policy, jti="kept", expires_at=now + 60, now=now)
    await revoke(app.policy, subject="carol", before=now, expires_at=now + 60, now=now)
    data = json.loads((tmp_path / "edgeauth.revocations.json").read_text())
    assert data["tokens"] == {"kept": now + 60}
    assert data["subjects"] == {"carol": {"before": now, "expires_at": now + 60}}


async def test_concurrent_writers_keep_every_entry(tmp_path: Path) -> None:
    """Writes from several workers at once are serialized by the lock file; none is lost."""
    path = write_policy(tmp_path)
    policies = [load_policy(path) for _ in range(3)]
    await asyncio.gather(
        *(asyncio.to_thread(asyncio.run, revoke(policies[i % 3], jti=f"j{i}")) for i in range(30))
    )
    data = json.loads((tmp_path / "edgeauth.revocations.json").read_text())
    assert set(data["tokens"]) == {f"j{i}" for i in range(30)}


def test_entries_expire_when_the_token_would_have() -> None:
    """A jti entry applies until the token's exp (plus the leeway grace), then lapses."""
    revs = RevocationList(tokens={"t": 1000.0})
    identity = Identity("u", token_id="t")
    assert revs.revoked(identity, 999.0)
    assert revs.revoked(identity, 1000.0 + GRACE - 1)
    assert not revs.revoked(identity, 1000.0 + GRACE)
    assert not revs.revoked(Identity("u", token_id="other"), 999.0)


def test_subject_entries_cut_at_before_and_lapse_at_expires_at() -> None:
    """iat < before is revoked; a credential without iat is revoked while the entry lasts."""
    revs = RevocationList(subjects={"alice": SubjectRevocation(100.0, expires_at=500.0)})
    assert revs.revoked(Identity("alice", issued_at=99.0), 200.0)
    assert not revs.revoked(Identity("alice", issued_at=100.0), 200.0)
    assert revs.revoked(Identity("alice", credential_type="api_key"), 200.0)
    assert not revs.revoked(Identity("alice", issued_at=1.0), 500.0 + GRACE)


def test_later_revocations_never_weaken_earlier_ones() -> None:
    """A second subject revocation keeps the later cut-off and the later expiry."""
    revs = RevocationList().changed(Change("subject", "a", before=200.0, expires_at=None), 0.0)
    revs = revs.changed(Change("subject", "a", before=100.0, expires_at=50.0), 0.0)
    assert revs.subjects["a"] == SubjectRevocation(200.0, None)
    revs = revs.changed(Change("token", "t", expires_at=300.0), 0.0)
    revs = revs.changed(Change("token", "t", expires_at=100.0), 0.0)
    assert revs.tokens["t"] == 300.0


async def test_an_unreadable_file_keeps_the_last_copy_then_fails_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt file keeps the last good list (logged once); past max staleness it is 503."""
    path, tick = tmp_path / "r.json", Ticker()
    store = FileRevocations(path, max_staleness=30, monotonic=tick)
    await store.apply(Change("token", "t", expires_at=time.time() + 60), time.time())
    assert "t" in (await store.snapshot()).tokens
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="edgeauth"):
        for _ in range(5):
            tick.now += 5
            assert "t" in (await store.snapshot()).tokens
        tick.now += 6
        with pytest.raises(AuthUnavailable):
            await store.snapshot()
        path.write_text('{"tokens": {}, "subjects": {}}')
        tick.now += 1
        assert (await store.snapshot()).tokens == {}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the revocation file" in m for m in messages) == 1
    assert sum("readable again" in m for m in messages) == 1


async def test_a_stale_list_refuses_tokens_with_503(tmp_path: Path) -> None:
    """When the local copy is too old, credentials get 503 auth_unavailable; anonymous requests pass."""
    loaded, tick = load_policy(write_policy(tmp_path)), Ticker()
    path = tmp_path / "edgeauth.revocations.json"
    stale = FileRevocations(path, max_staleness=30, monotonic=tick)
    policy = dataclasses.replace(loaded, state=State(revocations=stale))
    app = EdgeAuth(echo_app, policy=policy)
    assert await status_code(app, session_token()) == (200, None)
    path.mkdir()  # reading now fails (a directory), so the copy ages
    tick.now += 31
    assert await status_code(app, session_token()) == (503, "auth_unavailable")
    assert (await call(app, raw_path=b"/public/x")).status == 200


async def test_a_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    """No file yet: nothing is revoked, and the list is fresh."""
    store = FileRevocations(tmp_path / "none.json")
    assert await store.snapshot() == RevocationList()


async def test_an_unwritable_file_is_store_unavailable(tmp_path: Path) -> None:
    """revoke() reports a file it cannot write, and leaves a corrupt file alone."""
    path = tmp_path / "r.json"
    path.write_text("garbage")
    store = FileRevocations(path)
    with pytest.raises(StoreUnavailable, match="cannot update"):
        await store.apply(Change("token", "t", expires_at=1e10), time.time())
    assert path.read_text() == "garbage"
    with pytest.raises(StoreUnavailable):
        await FileRevocations(None).apply(Change("token", "t", expires_at=1e10), 0.0)


async def test_revoke_checks_its_arguments(tmp_path: Path) -> None:
    """Exactly one of jti and subject; before only with a subject; times need an offset."""
    policy = load_policy(write_policy(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        await revoke(policy, jti="a", subject="b")
    with pytest.raises(ValueError, match="exactly one"):
        await revoke(policy)
    with pytest.raises(ValueError, match="before applies"):
        await revoke(policy, jti="a", before=1.0)
    with pytest.raises(ValueError, match="offset"):
        await revoke(policy, subject="a", before=datetime(2026, 1, 1))
    await revoke(policy, subject="a", before=datetime(2026, 1, 1, tzinfo=UTC))
    assert not (tmp_path / "edgeauth.revocations.json.tmp").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T02:00:00+02:00", 1767225600.0),
        ("1767225600", 1767225600.0),
        ("1767225600.5", 1767225600.5),
    ],
)
def test_parse_time_forms(text: str, expected: float) -> None:
    """--before/--expires take ISO 8601 with an offset or epoch seconds."""
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00", "yesterday", "nan", ""])
def test_parse_time_refuses_ambiguous_times(text: str) -> None:
    """A time without an offset, or not a time, is refused."""
    with pytest.raises(ValueError, match=r"expected|offset"):
        parse_time(text)
