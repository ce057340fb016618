"""Audit events: one JSON line per denial (and allow on request), never a secret."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeauth.audit import (
    DECISION_FIELDS,
    LoggingAuditSink,
    decision_line,
    encode_event,
    fingerprint,
)
from edgeauth.model import Code

from .helpers import (
    API_KEY,
    SECRET,
    SEED_POLICY,
    call,
    echo_app,
    guarded,
    session_token,
    write_policy,
)

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


async def test_a_sink_of_its_own_gets_each_decision_as_a_dict_with_its_code(
    tmp_path: Path,
) -> None:
    """An audit sink passed to EdgeAuth gets every decision as a dict in the
    documented order, the code as the ``Code`` it always was (a str)."""
    from .helpers import RecordingAudit

    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    for _ in range(2):  # the second time, from the short path
        assert (await call(app, raw_path=b"/api/protected/x")).status == 401
    assert [list(e) for e in audit.events] == [list(DECISION_FIELDS)] * 2
    assert all(e["code"] is Code.MISSING_CREDENTIALS for e in audit.events)


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
    from edgeauth.pipeline import RequestIds

    make = RequestIds().take
    ids = [make() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    steps = {int(b, 16) - int(a, 16) for a, b in itertools.pairwise(ids)}
    assert 1 not in steps


def test_request_ids_can_be_taken_from_several_threads() -> None:
    """An engine shared by threads (one event loop each) gets unique ids, no error."""
    import threading

    from edgeauth.pipeline import RequestIds

    make = RequestIds().take
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        into.extend(make() for _ in range(20_000))

    threads = [threading.Thread(target=take, args=(t,)) for t in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ids = [i for t in taken for i in t]
    assert len(ids) == 80_000 and len(set(ids)) == 80_000


# [audit] file ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def file_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_audit_file_gets_one_line_per_denial_and_not_the_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With [audit] file (relative to the policy), denials are lines in that file."""
    app = guarded(tmp_path, '[audit]\nfile = "audit.log"\n' + SEED_POLICY)
    with caplog.at_level(logging.INFO, logger="edgeauth.audit"):
        await call(app, raw_path=b"/api/protected/x")
        await call(app, raw_path=b"/api/protected/x", headers=[("cookie", "session=a.b.c")])
        await call(app, raw_path=b"/public/x")
    await app.policy.aclose()
    events = file_lines(tmp_path / "audit.log")
    assert [e["code"] for e in events] == ["missing_credentials", "invalid_token"]
    assert all(set(e) == FIELDS for e in events)
    assert audit_lines(caplog) == []
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o640"


def test_audit_file_survives_rotation(tmp_path: Path) -> None:
    """Moved away (logrotate): the next events, within a second, go to a new file."""
    from edgeauth.audit import FileAuditSink

    clock = FakeClock()
    path = tmp_path / "audit.log"
    sink = FileAuditSink(path, clock=clock)
    sink.emit({"n": 1})
    path.rename(tmp_path / "audit.log.1")
    sink.emit({"n": 2})  # the descriptor still points at the moved file
    clock.now += 1.0
    sink.emit({"n": 3})
    sink.close()
    assert file_lines(tmp_path / "audit.log.1") == [{"n": 1}, {"n": 2}]
    assert file_lines(path) == [{"n": 3}]


def test_audit_file_outage_falls_back_to_the_logger_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No event is lost while the file cannot be written; the outage is logged once."""
    from edgeauth.audit import FileAuditSink

    clock = FakeClock()
    folder = tmp_path / "logs"
    sink = FileAuditSink(folder / "audit.log", clock=clock)
    with caplog.at_level(logging.INFO):
        sink.emit({"outcome": "deny", "n": 1})
        sink.emit({"outcome": "deny", "n": 2})
        folder.mkdir()
        clock.now += 1.0
        sink.emit({"outcome": "deny", "n": 3})
    sink.close()
    assert [
        json.loads(r.getMessage())["n"] for r in caplog.records if r.name == "edgeauth.audit"
    ] == [1, 2]
    errors = [r for r in caplog.records if r.name == "edgeauth" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "audit.log" in errors[0].getMessage()
    assert any("again" in r.getMessage() for r in caplog.records if r.name == "edgeauth")
    assert file_lines(folder / "audit.log") == [{"outcome": "deny", "n": 3}]


def test_audit_file_lines_from_two_writers_stay_whole(tmp_path: Path) -> None:
    """Two workers appending to one file: every line is one whole event."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    first, second = FileAuditSink(path), FileAuditSink(path)
    for i in range(500):
        first.emit({"writer": 1, "i": i, "pad": "x" * 300})
        second.emit({"writer": 2, "i": i, "pad": "y" * 300})
    first.close()
    second.close()
    events = file_lines(path)
    assert len(events) == 1000
    assert [e["i"] for e in events if e["writer"] == 1] == list(range(500))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("missing/audit.log", "existing folder"), (".", "a file path"), ("", "a file path")],
)
def test_audit_file_that_cannot_be_a_file_is_a_config_error(
    tmp_path: Path, value: str, expected: str
) -> None:
    from edgeauth import ConfigError, load_policy

    from .helpers import write_policy

    path = write_policy(tmp_path, f'[audit]\nfile = "{value}"\n' + SEED_POLICY)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    text = str(info.value)
    assert "audit.file" in text and expected in text and "line 2" in text


def test_audit_time_is_utc_to_the_second() -> None:
    from edgeauth.pipeline import _iso

    assert _iso(0.0) == "1970-01-01T00:00:00Z"
    assert _iso(1764300000.9) == "2025-11-28T03:20:00Z"
    assert _iso(1764300001.0) == "2025-11-28T03:20:01Z"
    assert _iso(1764300000.2) == "2025-11-28T03:20:00Z"


def test_audit_file_line_cut_short_is_ended_and_its_event_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full mid-line: that event goes to the logger, the partial line is
    ended before the next event, so every later line parses."""
    import os

    from edgeauth import audit

    path = tmp_path / "audit.log"
    sink = audit.FileAuditSink(path)
    real_write = os.write
    cut = {"left": 1}

    def short_write(fd: int, data: bytes) -> int:
        if cut["left"]:
            cut["left"] -= 1
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    with caplog.at_level(logging.INFO):
        sink.emit({"outcome": "deny", "n": 1})
        monkeypatch.setattr(audit.os, "write", short_write)
        sink.emit({"outcome": "deny", "n": 2})
        sink.emit({"outcome": "allow", "n": 3})
    sink.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"outcome": "deny", "n": 1}
    assert json.loads(lines[-1]) == {"outcome": "allow", "n": 3}
    assert len(lines) == 3  # the cut line stays, ended
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgeauth.audit"]
    assert logged == [{"outcome": "deny", "n": 2}]


def test_audit_file_after_close_goes_to_the_logger_even_allows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed sink opens nothing again; its events, allows included, reach the
    logger even when it only shows warnings."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    sink.emit({"outcome": "allow", "n": 1})
    sink.close()
    with caplog.at_level(logging.WARNING, logger="edgeauth.audit"):
        sink.emit({"outcome": "allow", "n": 2})
    assert file_lines(path) == [{"outcome": "allow", "n": 1}]
    assert [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgeauth.audit"] == [
        {"outcome": "allow", "n": 2}
    ]
    assert sink._fd is None  # nothing reopened after close


# [audit] file in an event loop: the events of one turn in one write ----------


async def turn_until(done: Callable[[], bool], turns: int = 10) -> None:
    """Let the event loop turn until ``done()``, at most ``turns`` times."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)


def logged_events(caplog: pytest.LogCaptureFixture) -> list[object]:
    return [json.loads(r.getMessage())["n"] for r in caplog.records if r.name == "edgeauth.audit"]


async def test_audit_file_events_of_one_turn_are_one_write_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events emitted in one turn of the loop reach the file on a next turn, in
    order, as whole lines written together."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    writes: list[bytes] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    for n in range(3):
        sink.emit({"outcome": "deny", "n": n})
    await turn_until(lambda: path.exists() and len(file_lines(path)) == 3)
    assert file_lines(path) == [{"outcome": "deny", "n": n} for n in range(3)]
    assert len(writes) == 1 and writes[0].endswith(b"\n")
    sink.close()


async def test_audit_file_close_writes_the_waiting_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() writes the events still waiting for the loop's next turn; the
    flush that turn then finds nothing."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    sink.emit({"outcome": "deny", "n": 1})
    sink.emit({"outcome": "allow", "n": 2})
    with caplog.at_level(logging.INFO):
        sink.close()
        assert [e["n"] for e in file_lines(path)] == [1, 2]
        await asyncio.sleep(0)
    assert [e["n"] for e in file_lines(path)] == [1, 2]
    assert logged_events(caplog) == []


async def test_audit_file_outage_sends_every_waiting_event_to_the_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the file cannot be written, each event of the turn reaches the
    fallback, in order; the outage is logged once."""
    from edgeauth.audit import FileAuditSink

    sink = FileAuditSink(tmp_path / "missing" / "audit.log")
    with caplog.at_level(logging.INFO):
        for n in range(5):
            sink.emit({"outcome": "allow" if n % 2 else "deny", "n": n})
        await turn_until(lambda: len(logged_events(caplog)) == 5)
    assert logged_events(caplog) == [0, 1, 2, 3, 4]
    errors = [r for r in caplog.records if r.name == "edgeauth" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    sink.close()


async def test_audit_file_write_cut_short_keeps_whole_lines_and_falls_back_for_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full in the middle of a turn's lines: the lines written whole stay,
    the other events go to the logger in order, the cut line is ended before
    the next event."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    real_write = os.write
    cut = {"left": 1}

    def short_write(fd: int, data: bytes) -> int:
        if cut["left"]:
            cut["left"] -= 1
            first = data.index(b"\n") + 1
            return real_write(fd, data[: first + 5])  # one line and a piece of the next
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    with caplog.at_level(logging.INFO):
        for n in range(4):
            sink.emit({"outcome": "deny", "n": n})
        await turn_until(lambda: len(logged_events(caplog)) == 3)
        sink.emit({"outcome": "deny", "n": 4})
        sink.close()
    assert logged_events(caplog) == [1, 2, 3]
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # the cut line stays, ended
    assert json.loads(lines[0])["n"] == 0
    assert json.loads(lines[2])["n"] == 4


async def test_audit_file_burst_is_written_while_it_lasts(tmp_path: Path) -> None:
    """Events wait in memory for at most about 64 KiB: a longer burst in one
    turn is written as it goes, whole lines, in order."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    line = len(encode_event({"n": 0, "pad": "x" * 1000})) + 1
    for n in range(300):
        sink.emit({"n": n, "pad": "x" * 1000})
    written = len(file_lines(path))
    assert written > 0
    assert (300 - written) * line <= 64 * 1024 + line
    await turn_until(lambda: len(file_lines(path)) == 300)
    assert [e["n"] for e in file_lines(path)] == list(range(300))
    sink.close()


async def test_audit_file_event_from_another_thread_is_written_at_once_after_those_waiting(
    tmp_path: Path,
) -> None:
    """An event emitted in another thread, with its own loop or none, is in the
    file when emit returns, after the events still waiting for this loop."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)

    async def emit_in_a_loop(event: dict[str, object]) -> None:
        sink.emit(event)

    sink.emit({"n": 1})
    in_a_loop = threading.Thread(target=asyncio.run, args=(emit_in_a_loop({"n": 2}),))
    in_a_loop.start()
    in_a_loop.join(timeout=60)
    assert [e["n"] for e in file_lines(path)] == [1, 2]
    sink.emit({"n": 3})
    no_loop = threading.Thread(target=sink.emit, args=({"n": 4},))
    no_loop.start()
    no_loop.join(timeout=60)
    assert [e["n"] for e in file_lines(path)] == [1, 2, 3, 4]
    sink.close()


async def test_audit_file_fallback_failing_on_one_event_still_gets_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fallback that raises for one event is logged; the other events of the
    turn still reach it, in order."""
    from edgeauth.audit import FileAuditSink

    class Picky:
        def __init__(self) -> None:
            self.events: list[object] = []

        def emit(self, event: Mapping[str, Any]) -> None:
            if event["n"] == 1:
                raise ValueError("picky")
            self.events.append(event["n"])

    fallback = Picky()
    sink = FileAuditSink(tmp_path / "missing" / "audit.log", fallback=fallback)
    with caplog.at_level(logging.ERROR, logger="edgeauth"):
        for n in range(3):
            sink.emit({"n": n})
        await turn_until(lambda: len(fallback.events) == 2)
    assert fallback.events == [0, 2]
    assert any(r.exc_info for r in caplog.records if r.name == "edgeauth")
    sink.close()


def test_audit_file_loses_no_event_of_threads_emitting_at_once(tmp_path: Path) -> None:
    """Threads with a loop each (the lock-free path) and threads without one
    (writing at once) share a sink: every event is in the file exactly once,
    each line whole, each thread's events in the order it emitted them."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    per_thread = 3000

    async def emit_in_turns(thread: int) -> None:
        for n in range(per_thread):
            sink.emit({"thread": thread, "n": n})
            if n % 7 == 0:
                await asyncio.sleep(0)  # the loop's flush runs now and then

    def emit_without_a_loop(thread: int) -> None:
        for n in range(per_thread):
            sink.emit({"thread": thread, "n": n})

    threads = [threading.Thread(target=asyncio.run, args=(emit_in_turns(t),)) for t in range(3)]
    threads += [threading.Thread(target=emit_without_a_loop, args=(t,)) for t in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    sink.close()
    seen: dict[object, list[object]] = {}
    for event in file_lines(path):  # each line parses: none is cut or interleaved
        seen.setdefault(event["thread"], []).append(event["n"])
    assert seen == {t: list(range(per_thread)) for t in range(5)}


def test_audit_file_event_emitted_while_another_thread_closes_is_not_stranded(
    tmp_path: Path,
) -> None:
    """close() from another thread takes the waiting lines while the loop that
    was to flush them emits one more, and that loop then stops without
    another turn: the last event still reaches the fallback, not left behind."""
    from collections import deque

    from edgeauth.audit import FileAuditSink

    class Fallback:
        def __init__(self) -> None:
            self.events: list[Mapping[str, Any]] = []

        def emit(self, event: Mapping[str, Any]) -> None:
            self.events.append(event)

    draining, emitted, closed = threading.Event(), threading.Event(), threading.Event()

    class Waiting(deque[str]):
        """Lets the loop emit just as close() has taken the waiting lines."""

        armed = False

        def popleft(self) -> str:
            line = super().popleft()
            if not len(self) and self.armed:  # close() has taken the last waiting line
                self.armed = False
                draining.set()
                emitted.wait(0.2)  # the emit may have to wait for close()'s lock
            return line

    fallback = Fallback()
    sink = FileAuditSink(tmp_path / "audit.log", fallback=fallback)
    waiting = Waiting()
    sink._pending, sink._push = waiting, waiting.append

    async def on_the_loop() -> None:
        sink.emit({"n": 1})  # schedules this loop's flush
        waiting.armed = True
        assert draining.wait(10)
        sink.emit({"n": 2})
        emitted.set()
        assert closed.wait(10)
        asyncio.get_running_loop().stop()  # shutdown: no turn for the flush

    loop = asyncio.new_event_loop()

    def run() -> None:
        task = loop.create_task(on_the_loop())
        loop.run_forever()
        loop.close()
        assert task.done()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(1000):  # bounded: until the loop has emitted its first event
        if waiting.armed:
            break
        threading.Event().wait(0.01)
    sink.close()
    closed.set()
    thread.join(timeout=30)
    assert [e["n"] for e in file_lines(tmp_path / "audit.log")] == [1]
    assert [e["n"] for e in fallback.events] == [2]
    assert not waiting


def test_audit_file_event_without_a_loop_is_written_before_emit_returns(tmp_path: Path) -> None:
    """A synchronous caller finds its event in the file when emit returns."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    sink.emit({"n": 1})
    assert file_lines(path) == [{"n": 1}]
    sink.close()


def stopped_with_its_flush_due(sink: Any, event: dict[str, object]) -> asyncio.AbstractEventLoop:
    """A new loop that emits ``event`` to ``sink`` and stops before the turn
    that would write it (not closed)."""
    loop = asyncio.new_event_loop()

    def emit_and_stop() -> None:
        sink.emit(event)
        loop.stop()

    loop.call_soon(emit_and_stop)
    loop.run_forever()
    return loop


def test_audit_file_events_left_by_a_stopped_loop_go_out_with_the_next(tmp_path: Path) -> None:
    """A loop that stops before the turn that would write its events does not
    lose them: the next event, or close(), writes them first."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    stopped_with_its_flush_due(sink, {"n": 1}).close()
    assert not path.exists() or file_lines(path) == []
    sink.emit({"n": 2})
    assert [e["n"] for e in file_lines(path)] == [1, 2]
    sink.close()


def test_audit_file_events_left_by_a_stopped_loop_go_out_with_the_next_loops_first(
    tmp_path: Path,
) -> None:
    """A loop that stopped with its flush due is not taken for the loop that
    will write: an event emitted in the next loop run on the same thread
    writes the waiting events and itself at once, in order."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    sink = FileAuditSink(path)
    first = stopped_with_its_flush_due(sink, {"n": 1})

    async def emit_in_the_next_loop() -> list[object]:
        sink.emit({"n": 2})
        return [e["n"] for e in file_lines(path)]  # before this loop takes a turn

    assert asyncio.run(emit_in_the_next_loop()) == [1, 2]
    first.close()
    sink.close()
    assert [e["n"] for e in file_lines(path)] == [1, 2]


async def test_audit_file_two_writers_in_one_loop_never_interleave(tmp_path: Path) -> None:
    """Two workers' sinks on one file, both writing turns of many events: every
    line is one whole event and each writer's events keep their order."""
    from edgeauth.audit import FileAuditSink

    path = tmp_path / "audit.log"
    first, second = FileAuditSink(path), FileAuditSink(path)
    for turn in range(10):
        for i in range(turn * 100, turn * 100 + 100):
            first.emit({"writer": 1, "i": i, "pad": "x" * 300})
            second.emit({"writer": 2, "i": i, "pad": "y" * 300})
        await asyncio.sleep(0)
    first.close()
    second.close()
    events = file_lines(path)
    assert len(events) == 2000
    assert [e["i"] for e in events if e["writer"] == 1] == list(range(1000))
    assert [e["i"] for e in events if e["writer"] == 2] == list(range(1000))


# encode_event ---------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.sampled_from([*Code, "GET", "/api/x", "null", "%s", "%", "true", "1"]),
)
_DECISION_KEYS = [
    "time", "request_id", "method", "path", "rule", "outcome", "code",
    "status", "reason", "subject", "client", "authenticator", "key_id", "fingerprint",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=12), st.sampled_from(["%s", "%", 'a"b', "é"])),
        st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)),
        max_size=16,
    )
)
def test_encode_event_writes_what_json_dumps_writes(event: dict[str, Any]) -> None:
    """Any event, encoded twice (the second time from the templates and the
    remembered texts): the same line as ``json.dumps``."""
    expected = json.dumps(event, separators=(",", ":"))
    assert encode_event(event) == expected
    assert encode_event(event) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(_SCALARS, min_size=len(_DECISION_KEYS), max_size=len(_DECISION_KEYS)))
def test_decision_events_of_one_shape_encode_like_json_dumps(values: list[Any]) -> None:
    """Decision events share one template; whatever their values (True after 1,
    1.0 after 1, a code after its text), each line is what ``json.dumps`` writes."""
    event = dict(zip(_DECISION_KEYS, values, strict=True))
    assert encode_event(event) == json.dumps(event, separators=(",", ":"))


# What decision_line takes: plain str, int and None (the engine's values).
_PLAIN_SCALARS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=80),
    st.sampled_from(["GET", "/api/x", "null", "%s", "%", "true", "1", "401"]),
)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(_PLAIN_SCALARS, min_size=len(_DECISION_KEYS), max_size=len(_DECISION_KEYS)),
    st.lists(st.sampled_from(range(2, len(_DECISION_KEYS))), max_size=3),
    _PLAIN_SCALARS,
)
def test_decision_lines_are_what_json_dumps_writes(
    values: list[Any], changed: list[int], other: Any
) -> None:
    """``decision_line`` writes what ``json.dumps`` of the event writes, also
    when its remembered parts are found again: the same values twice, then
    with some changed to another value ("1" where 1 was, "null" where None
    was)."""
    for i in changed:
        candidate = [*values]
        candidate[i] = other
        for row in (values, candidate, candidate):
            event = dict(zip(DECISION_FIELDS, row, strict=True))
            assert decision_line(tuple(row)) == json.dumps(event, separators=(",", ":"))
    for row in (values, values):
        event = dict(zip(DECISION_FIELDS, row, strict=True))
        assert decision_line(tuple(row)) == json.dumps(event, separators=(",", ":"))


def test_decision_lines_tell_values_that_read_alike_apart() -> None:
    """A value that reads like one whose line was remembered (1 and "1", None
    and "null", a code's text in another case), in any field: still the line
    ``json.dumps`` writes for it. A status of another type than int (a bool,
    a float) takes the general way."""
    base = ["2026-12-06T17:00:00Z", "ab", "GET", "/x", "r", "deny", "csrf", 403]
    base += [None, None, "::1", None, None, None]
    pairs = [(1, "1"), (None, "null"), ("csrf", "CSRF"), (403, "403"), (0, "0"), (2, -2)]
    for i in range(2, len(base)):
        for first, then in pairs:
            for value in (first, then, first, then):
                row = [*base]
                row[i] = value
                event = dict(zip(DECISION_FIELDS, row, strict=True))
                assert decision_line(tuple(row)) == json.dumps(event, separators=(",", ":"))
    for status in (403, True, 403.0, 403):
        row = [*base]
        row[7] = status
        event = dict(zip(DECISION_FIELDS, row, strict=True))
        assert decision_line(tuple(row)) == json.dumps(event, separators=(",", ":"))


class _Caseless(str):
    """A string equal to every spelling of its text (as some header-name types are)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


def test_a_string_type_with_its_own_equality_is_not_remembered() -> None:
    """A str subclass equal to other spellings does not make a plain string
    of another spelling come out in its spelling, nor the other way round."""
    for first, then in ((_Caseless("Mixed"), "mixed"), ("mixed", _Caseless("Mixed"))):
        for value in (first, then, first, then):
            event = {"method": "GET", "client": value, "n": 1}
            assert encode_event(event) == json.dumps(event, separators=(",", ":"))


async def test_a_client_given_as_a_string_type_of_its_own_is_audited_as_it_reads(
    tmp_path: Path,
) -> None:
    """A server that hands the client address as a str subclass (equal to
    other spellings): each line in the audit file reads as that value."""
    from edgeauth import EdgeAuth, load_policy

    policy = load_policy(write_policy(tmp_path, SEED_POLICY + '[audit]\nfile = "audit.log"\n'))
    app = EdgeAuth(echo_app, policy=policy)
    for client in ("abc", _Caseless("ABC"), "abc", _Caseless("Abc")):
        assert (await call(app, raw_path=b"/api/protected/x", client=(client, 9))).status == 401
    await asyncio.sleep(0)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["client"] for line in lines] == ["abc", "ABC", "abc", "Abc"]
    await policy.aclose()


def test_a_decision_has_one_value_per_field() -> None:
    with pytest.raises(ValueError, match="14 values, got 13"):
        decision_line(("t", "r", "GET", "/x", "r", "deny", None, 401, None, None, None, None, None))


def test_decision_lines_of_the_engine_shape_are_what_json_dumps_writes() -> None:
    """The engine's own values (a time, a fresh request id, a status, strings
    and None), over and over with a few of them changing: the same line as
    ``json.dumps``, and the shape's keys in DESIGN.md's order."""
    assert list(DECISION_FIELDS) == _DECISION_KEYS
    seen = set()
    for n in range(3000):
        values = (
            f"2026-12-06T17:0{n % 3}:00Z",
            f"{n:016x}",
            ("GET", "HEAD", "POST")[n % 3],
            ("/api/x", '/a"b\\c', "/\u00e9", "/x\x01")[n % 4],
            ("api", None)[n % 2],
            ("deny", "allow")[n % 2],
            (Code.MISSING_CREDENTIALS, "missing_credentials", None)[n % 3],
            (401, 200, 302, 100, 599, 600, 7)[n % 7],
            (None, "credential revoked")[n % 2],
            (None, "alice", "b\u00f6b")[n % 3],
            ("127.0.0.1", "::1", None)[n % 3],
            (None, "session")[n % 2],
            None,
            (None, "930bbdc51b6a")[n % 2],
        )
        line = decision_line(values)
        event = dict(zip(DECISION_FIELDS, values, strict=True))
        assert line == json.dumps(event, separators=(",", ":"))
        seen.add(line[line.index(',"method"') :])
    assert 50 < len(seen) < 300  # distinct parts after the request id, each met many times


async def test_audit_file_decisions_are_the_lines_of_their_events_and_fall_back_as_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``emit_decision`` writes the line ``emit`` writes for the same event, in
    order with other events; while the file cannot be written, the logger gets
    each decision as its event (the keys and values)."""
    from edgeauth.audit import FileAuditSink

    values = ("2026-12-06T17:00:00Z", "ab", "GET", "/x", "r", "deny", "csrf", 403)
    values += (None, "alice", "::1", "session", None, "930bbdc51b6a")
    event = dict(zip(DECISION_FIELDS, values, strict=True))
    sink = FileAuditSink(tmp_path / "audit.log")
    sink.emit_decision(values)
    sink.emit({"event": "lockout"})
    sink.emit(event)
    await turn_until(lambda: (tmp_path / "audit.log").exists())
    await turn_until(lambda: len((tmp_path / "audit.log").read_text().splitlines()) == 3)
    first, lockout, again = (tmp_path / "audit.log").read_text().splitlines()
    assert first == again == json.dumps(event, separators=(",", ":"))
    assert json.loads(lockout) == {"event": "lockout"}
    sink.close()

    broken = FileAuditSink(tmp_path / "missing" / "audit.log")
    with caplog.at_level(logging.INFO):
        broken.emit_decision(values)
        broken.emit({"outcome": "deny", "n": 1})
        await turn_until(lambda: len(audit_lines(caplog)) == 2)
    assert audit_lines(caplog) == [event, {"outcome": "deny", "n": 1}]
    broken.close()


def test_codes_are_found_as_their_text() -> None:
    """A code and its text are one key: a memo filled with either finds the other."""
    assert {Code.REVOKED: 1}["revoked"] == 1
    assert {"revoked": 1}[Code.REVOKED] == 1
    assert hash(Code.CSRF) == hash("csrf") and Code.CSRF == "csrf"
    assert len(set(Code)) == len(Code) == len({c.value for c in Code})
