"""One structured audit event per decision (denials always, allows on request).

Events go to the standard logger ``edgeauth.audit`` as one JSON object per
line: denials at WARNING (so they are visible even before logging is
configured), allows at INFO. With ``[audit] file`` they are appended to that
file instead (:class:`FileAuditSink`), the events of one event-loop turn in
one ``write``. An event never holds a token, cookie, key or secret:
credentials appear only as a fingerprint, the first 12 hex digits of their
SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Final, Protocol, cast

from .memo import remember

__all__ = [
    "DECISION_FIELDS",
    "AuditSink",
    "FileAuditSink",
    "LoggingAuditSink",
    "decision_head",
    "decision_line",
    "decision_tail",
    "encode_event",
    "fingerprint",
]


class AuditSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None: ...


def fingerprint(credential: str) -> str:
    """A stable, non-reversible name for a credential in logs.

    >>> fingerprint("secret-token")
    '930bbdc51b6a'
    """
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _unencodable(value: object) -> Any:
    raise TypeError(f"audit event value of type {type(value).__name__} is not JSON")


# One C encoder for every event: json.dumps, and JSONEncoder.encode too, build a
# new one per call. Events are flat, so there is no cycle to look for.
_CHUNKS: Final = c_make_encoder(
    None, _unencodable, encode_basestring_ascii, None, ":", ",", False, False, True
)


def encode_event(event: Mapping[str, Any]) -> str:
    """An event as one line of compact, ASCII-only JSON (no newline): exactly
    what ``json.dumps(event, separators=(",", ":"))`` writes.

    >>> encode_event({"outcome": "deny", "status": 401, "reason": None})
    '{"outcome":"deny","status":401,"reason":null}'

    Events of one shape (the same keys in the same order: every decision event)
    are filled into a template built once per shape, and string values that
    recur (paths, rules, codes, addresses, the time within its second) are
    escaped once: the C encoder escapes every key and every value of every
    event, which costs more than the rest of a denial. Any other value (a
    float, a bool, a nested object) goes to the C encoder.
    """
    template = _TEMPLATES.get(tuple(event))
    if template is None:
        template = _template(event)
        if template is None:
            return "".join(_CHUNKS(event, 0))
    values = list(event.values())
    if not _PLAIN.issuperset(map(type, values)):  # a float, a list, a str subclass...
        return "".join(_CHUNKS(event, 0))
    texts = list(map(_TEXTS.get, values))
    i = -1
    while None in texts:  # values not seen before: the request id, the status
        i = texts.index(None, i + 1)
        text = _text(values[i])
        if text is None:
            return "".join(_CHUNKS(event, 0))
        texts[i] = text
    line: list[str | None] = list(template)
    line[1::2] = texts  # no None is left in texts
    return "".join(cast("list[str]", line))


def _text(value: object) -> str | None:
    """The JSON text of a plain string, None or int, remembered for None and
    short strings; None for anything else (the C encoder's business)."""
    if value is None:
        remember(_TEXTS, None, "null")
        return "null"
    if type(value) is str:
        text: str = _quote(value)
        if len(value) <= _TEXT_MEMO_CHARS:
            remember(_TEXTS, value, text)
        return text
    if type(value) is int:  # not bool: True is not 1 in JSON
        return int.__repr__(value)
    return None


# The types whose values the memos may hold and look up: an exact str, int
# or None equals only a value of its own type with the same JSON text (a bool,
# a float, or a str subclass with its own equality may equal one and read
# differently).
_PLAIN: Final = frozenset({str, int, type(None)})


def _template(event: Mapping[str, Any]) -> list[str] | None:
    """The event's template (:func:`_template_of`), kept for its shape; None
    when a key is not a string or too many shapes are kept already."""
    keys = tuple(event)
    if len(_TEMPLATES) >= _SHAPES or not all(type(k) is str for k in keys):
        return None
    template = _TEMPLATES[keys] = _template_of(keys)
    return template


def _template_of(keys: tuple[str, ...]) -> list[str]:
    """The line around the values: ``['{"key":', value, ',"key":', value, '}']``
    with the values left empty, for these keys in order."""
    template: list[str] = []
    for i, key in enumerate(keys):
        template += ("{" if i == 0 else ",") + _quote(key) + ":", ""
    template.append("}" if keys else "{}")
    return template


# Final: the compiled build reads these module constants directly, not
# through the module's dict.
_quote: Final = encode_basestring_ascii
_SHAPES: Final = 64  # event shapes kept; edgeauth emits a handful
_TEMPLATES: Final[dict[tuple[str, ...], list[str]]] = {}
_TEXT_MEMO_CHARS: Final = 64  # longer strings are escaped every time, not kept
_TEXTS: Final[dict[str | None, str]] = {}
"""Plain string value (and None) -> its JSON text. Bounded (emptied when full,
like every memo). Looked up with values of the plain types only."""


DECISION_FIELDS: Final = (
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
)
"""The keys of every decision event (allow or deny), in their order."""

Decision = tuple[Any, ...]
"""A decision event's values, in the order of :data:`DECISION_FIELDS`."""


def decision_line(values: Decision) -> str:
    """The decision event with these values as one line: exactly
    ``encode_event(dict(zip(DECISION_FIELDS, values)))``.

    The values after the request id repeat from request to request (the same
    route, rule, outcome and client), so their part of the line is remembered
    per values (bounded); the time's part is remembered within its second, and
    the request id, new every time, is escaped. ``values`` must hold exactly
    one value per field (ValueError otherwise), each a plain ``str``, ``int``
    or None (not a subclass, bool or float: a value equal to a remembered one
    would be written as that one), as the engine's are; a time or request id
    that is not a string, or a status that is not an int, goes to
    :func:`encode_event`.

    >>> decision_line(("2026-01-02T03:04:05Z", "ab12", "GET", "/x", "api", "deny",
    ...                "missing_credentials", 401, None, None, "::1", None, None, None))[:74]
    '{"time":"2026-01-02T03:04:05Z","request_id":"ab12","method":"GET","path":"'
    """
    if len(values) != len(DECISION_FIELDS):
        raise ValueError(f"a decision has {len(DECISION_FIELDS)} values, got {len(values)}")
    time, rid, status = values[0], values[1], values[7]
    if type(time) is str and type(rid) is str and type(status) is int:
        tail = decision_tail(values[2:])
        if tail is not None:
            return f"{decision_head(time)}{_quote(rid)}{tail}"
    return encode_event(dict(zip(DECISION_FIELDS, values, strict=True)))


def decision_head(time: str) -> str:
    """A decision line up to its request id's text: ``{"time":...,"request_id":``
    for this time (a plain ``str``), remembered within its second."""
    head = _HEADS.get(time)
    if head is None:
        head = remember(_HEADS, time, '{"time":' + _quote(time) + ',"request_id":', 4)
    return head


def decision_tail(rest: Decision) -> str | None:
    """A decision line after its request id's text, for the values of the
    fields after the request id (``values[2:]``); remembered (bounded) when
    short. None when a value is not of the plain types :func:`decision_line`
    asks for."""
    tail = _TAILS.get(rest)
    if tail is None:
        tail = _tail(rest)
    return tail


def _tail(rest: Decision) -> str | None:
    """The line after the request id's text for these values (the fields after
    the request id, of the plain types), remembered when short."""
    line: list[str] = []
    for key, value in zip(_TAIL_KEYS, rest, strict=True):
        text = _text(value)
        if text is None:
            return None
        line += key, text
    line.append("}")
    tail = "".join(line)
    if len(tail) <= _TAIL_MEMO_CHARS:
        remember(_TAILS, rest, tail, _TAIL_MEMO_SIZE)
    return tail


# ',"method":' and so on: the keys after the request id, with their separators.
_TAIL_KEYS: Final = tuple("," + _quote(key) + ":" for key in DECISION_FIELDS[2:])
_HEADS: Final[dict[str, str]] = {}
_TAILS: Final[dict[Decision, str]] = {}
"""Values after the request id -> their part of the line. Keys and lookups
hold values of the plain types only (:data:`_PLAIN`; the callers'
precondition), so a hit is the text of the very values looked up."""
_TAIL_MEMO_CHARS: Final = 1024
_TAIL_MEMO_SIZE: Final = 1024


class LoggingAuditSink:
    """Writes each event as a JSON line to the ``edgeauth.audit`` logger:
    allows at ``allow_level`` (INFO), everything else at WARNING."""

    def __init__(
        self, logger: logging.Logger | None = None, *, allow_level: int = logging.INFO
    ) -> None:
        self._logger = logger or logging.getLogger("edgeauth.audit")
        self._allow_level = allow_level

    def emit(self, event: Mapping[str, Any]) -> None:
        level = self._allow_level if event.get("outcome") == "allow" else logging.WARNING
        logger = self._logger
        if logger.isEnabledFor(level):
            message = encode_event(event)
            # makeRecord + handle is what Logger.log does, minus the stack walk
            # that finds the caller: that walk costs more than the event itself.
            record = logger.makeRecord(logger.name, level, "edgeauth", 0, message, (), None)
            logger.handle(record)


log = logging.getLogger("edgeauth")


class FileAuditSink:
    """Appends each event as one JSON line to a file.

    Lines go out whole, one ``write(2)`` at a time on a descriptor opened with
    ``O_APPEND``, so lines from several workers sharing the file never
    interleave. In a running event loop, the events of one turn are written
    together by a callback the loop runs on its next turn, or at once when more
    than 64 KiB wait (a process killed before then loses them); without a loop
    (a thread, a synchronous caller), an event is in the file when :meth:`emit`
    returns. This skips the ``logging`` machinery, which costs more than the
    event itself.

    The file is created if missing (mode 0640) and reopened when it has been
    moved or deleted (log rotation), checked at most once a second: events of
    that second still go to the moved file (kept by logrotate), or to the
    deleted one (lost with it). While the file cannot be written, events go to
    ``fallback`` (the ``edgeauth.audit`` logger, allows at WARNING too), in
    order, so none is lost; the outage and the recovery are logged once. A line
    cut short (disk full) is ended before the next one, so every other line
    stays whole; the events not written whole go to ``fallback``. :meth:`close`
    writes what waits; after it, events go to ``fallback``. One sink may be
    shared by threads: an event emitted away from the loop that will write the
    waiting events (no loop, another thread's loop) writes them with itself,
    and events left waiting by a loop that stopped go out with the next event
    or at :meth:`close`.

    An event emitted on the loop that will write it takes no lock: its line is
    appended to a deque (thread-safe) and left to that loop's flush; taking
    the lock costs more than the rest of the event. The line goes in before
    the sink's state is read, so whichever writer runs next takes it. That
    loop is recognised by its thread and by its running, not by asking for
    the running loop: on Python 3.11 that asks the kernel for the process id.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fallback: AuditSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self._fallback = fallback or LoggingAuditSink(allow_level=logging.WARNING)
        self._clock = clock
        self._fd: int | None = None
        self._file_id: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._failing = False
        self._cut_short = False  # the last write left a partial line
        self._closed = False
        self._open_error: OSError | None = None
        self._lock = threading.Lock()
        # Lines waiting for the flush, without their newline: appended without
        # the lock, taken under it.
        self._pending: deque[str] = deque()
        self._push = self._pending.append  # bound once: called on every event
        self._pending_chars = 0  # about: the loop's own events count it without the lock
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop that will flush
        self._flush_thread = 0  # the thread it was running in then

    def emit(self, event: Mapping[str, Any]) -> None:
        self._append(encode_event(event))

    def emit_decision(self, values: Decision) -> None:
        """Emit the decision event with these values (in the order of
        :data:`DECISION_FIELDS`, of the plain types :func:`decision_line`
        asks for): the same line as :meth:`emit` of that event writes,
        without building the event."""
        self._append(decision_line(values))

    def emit_line(self, line: str) -> None:
        """Emit the decision event whose line the caller has built, exactly as
        :func:`decision_line` builds it."""
        self._append(line)

    def _append(self, line: str) -> None:
        """Queue ``line`` (ASCII, no newline) for the flush, or write it now."""
        self._push(line)
        flush_on = self._flush_on
        if flush_on is not None and self._flush_thread == _thread_id() and flush_on.is_running():
            # This thread's loop, whose flush is due (it runs here, not
            # meanwhile), will take the line, or another writer took it already.
            # (A loop that stopped does not run: it may never take it.)
            self._pending_chars += len(line) + 1
            if self._pending_chars <= _PENDING_BYTES:
                return
        try:
            loop: asyncio.AbstractEventLoop | None = _running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if loop is not None and self._flush_on is None and not self._closed:
                self._pending_chars += len(line) + 1
                if self._pending_chars <= _PENDING_BYTES:
                    loop.call_soon(self._flush)
                    self._flush_thread = _thread_id()  # before the loop: _append reads that first
                    self._flush_on = loop
                    return
            unwritten = self._write_pending()
        self._fall_back(unwritten)

    def _flush(self) -> None:
        with self._lock:
            unwritten = self._write_pending()
        self._fall_back(unwritten)

    def _write_pending(self) -> list[str]:
        """Write the waiting lines in one write (under the lock); the lines
        that are not in the file (all of them once the sink is closed)."""
        # Reset before taking the lines: an emit that still saw the scheduled
        # flush has appended its line already, one that sees None takes the lock.
        self._flush_on, self._pending_chars = None, 0
        take, lines = self._pending.popleft, []
        for _ in range(len(self._pending)):  # those there now; a later one waits its turn
            lines.append(take())
        if not lines or self._closed:
            return lines
        count = len(lines)
        lines.append("")  # the last line's newline
        data = "\n".join(lines).encode("ascii")
        return lines[self._write(data, count) : count]

    def _fall_back(self, lines: list[str]) -> None:
        """Hand the events of ``lines`` to the fallback sink: each line is the
        JSON of its event, read back (only while the file cannot be written)."""
        for line in lines:
            try:
                self._fallback.emit(json.loads(line))
            except Exception:  # the others must still get there
                log.exception("the audit fallback failed")

    def _write(self, data: bytes, lines: int) -> int:
        """Append ``data``, that many whole lines, in one write; how many of
        them are in the file whole. A failure is reported once per outage."""
        now = self._clock()
        if now - self._checked >= _REOPEN_CHECK_SECONDS:
            self._checked = now
            self._reopen_if_moved()
        ends_cut_line = self._cut_short
        if ends_cut_line:
            data = b"\n" + data
        written = 0
        try:
            if self._fd is None:
                raise OSError(f"cannot open {self.path}: {self._open_error}")
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path} (disk full?)")
        except OSError as exc:
            done = data[:written]
            if done:
                self._cut_short = not done.endswith(b"\n")
            if not self._failing:
                self._failing = True
                log.error("cannot write the audit file, using the edgeauth.audit logger: %s", exc)
            return max(done.count(b"\n") - ends_cut_line, 0)
        self._cut_short = False
        if self._failing:
            self._failing = False
            log.warning("writing the audit file %s again", self.path)
        return lines

    def close(self) -> None:
        """Write what is waiting and close the file; later events go to the fallback."""
        with self._lock:
            unwritten = self._write_pending()
            self._closed = True
            self._close_fd()
        self._fall_back(unwritten)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._file_id = None, None

    def _reopen_if_moved(self) -> None:
        try:
            st = os.stat(self.path)
            if self._fd is not None and (st.st_dev, st.st_ino) == self._file_id:
                return
        except OSError:
            pass  # moved away or deleted: open (create) it again
        self._close_fd()
        self._checked = self._clock()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self._open_error = exc
            return  # emit reports it and falls back
        st = os.fstat(fd)
        self._fd, self._file_id = fd, (st.st_dev, st.st_ino)


_running_loop: Final = asyncio.get_running_loop
_thread_id: Final = threading.get_ident
_REOPEN_CHECK_SECONDS: Final = 1.0
_PENDING_BYTES: Final = 64 * 1024
