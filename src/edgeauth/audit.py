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


class LoggingAuditSink:
    """Writes each event as a JSON line to the ``edgeauth.audit`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("edgeauth.audit")

    def emit(self, event: Mapping[str, Any]) -> None:
        level = logging.INFO if event.get("outcome") == "allow" else logging.WARNING
        if self._logger.isEnabledFor(level):
            self._logger.log(level, json.dumps(event, separators=(",", ":"), ensure_ascii=True))
