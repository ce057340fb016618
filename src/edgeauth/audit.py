"""One structured audit event per decision (denials always, allows on request).

Events go to the standard logger ``edgeauth.audit`` as one JSON object per
line: denials at WARNING (so they are visible even before logging is
configured), allows at INFO. An event never holds a token, cookie, key or
secret: credentials appear only as a fingerprint, the first 12 hex digits of
their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["AuditSink", "LoggingAuditSink", "fingerprint"]


class AuditSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None: ...


def fingerprint(credential: str) -> str:
    """A stable, non-reversible name for a credential in logs.

    >>> fingerprint("secret-token")
    '930bbdc51b6a'
    """
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:12]


# One encoder for every event (json.dumps with options builds a new one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


class LoggingAuditSink:
    """Writes each event as a JSON line to the ``edgeauth.audit`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("edgeauth.audit")

    def emit(self, event: Mapping[str, Any]) -> None:
        level = logging.INFO if event.get("outcome") == "allow" else logging.WARNING
        logger = self._logger
        if logger.isEnabledFor(level):
            message = _ENCODE(event)
            # makeRecord + handle is what Logger.log does, minus the stack walk
            # that finds the caller: that walk costs more than the event itself.
            record = logger.makeRecord(logger.name, level, "edgeauth", 0, message, (), None)
            logger.handle(record)
