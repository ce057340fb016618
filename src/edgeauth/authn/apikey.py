"""API keys: a file of SHA-256 digests, a constant-time lookup, an authenticator.

The keys file holds digests only; ``edgeauth keys new`` (:func:`new_key`) prints
a key once, with the ``[[keys]]`` entry to paste::

    [[keys]]
    id = "reporting-2026"          # shown in logs and audit events, never the key
    sha256 = "<hex SHA-256 of the key>"
    subject = "svc-reporting"
    roles = ["service"]
    scopes = ["reports:read"]      # optional
    expires = 2027-01-01T00:00:00Z # optional
    disabled = false               # optional

Keys are random and long, so a fast hash is enough: a password KDF would make
every request CPU-bound without making a 256-bit key any harder to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue, InvalidCredentials
from ..model import Identity
from .base import CredentialSource, looks_like_jwt

__all__ = ["ApiKeyAuthenticator", "ApiKeyEntry", "KeyStore", "load_keys_file", "new_key"]


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    """One ``[[keys]]`` entry. ``id`` is what logs show; the key itself is never kept."""

    id: str
    sha256: str
    subject: str
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    expires: datetime | None = None
    disabled: bool = False


def _digest_of(key: str) -> str:
    # surrogatepass: a credential that cannot be UTF-8 encoded must miss, not crash.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """An immutable index of entries by digest.

    >>> store = KeyStore([ApiKeyEntry("k1", hashlib.sha256(b"secret").hexdigest(), "svc")])
    >>> store.lookup("secret").id, store.lookup("guess")
    ('k1', None)
    """

    __slots__ = ("_by_digest",)

    def __init__(self, entries: Sequence[ApiKeyEntry]) -> None:
        by_digest: dict[str, ApiKeyEntry] = {}
        for entry in entries:
            if not _LOWER_HEX64.fullmatch(entry.sha256):
                raise ValueError(f"key {entry.id!r}: sha256 must be 64 lower-case hex characters")
            if entry.sha256 in by_digest:
                raise ValueError(f"key {entry.id!r} repeats the sha256 of another key")
            by_digest[entry.sha256] = entry
        self._by_digest = by_digest

    def lookup(self, key: str) -> ApiKeyEntry | None:
        """The entry whose digest is SHA-256(``key``), or None."""
        digest = _digest_of(key)
        # The dict lookup's timing depends on SHA-256(key), never on the key's
        # bytes: an attacker cannot steer a guess's digest toward a stored one
        # (preimage resistance), so learning how many leading digest characters
        # matched tells nothing about any stored key. The final comparison is
        # constant-time all the same, so no path compares secrets with `==`.
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            return None
        return entry

    def __len__(self) -> int:
        return len(self._by_digest)


class ApiKeyAuthenticator:
    """Authenticates API keys against a :class:`KeyStore` (``type = "api_key"``)."""

    __slots__ = ("forward_credential", "id", "keys", "sources")

    def __init__(
        self,
        id: str,
        *,
        sources: tuple[CredentialSource, ...],
        keys: KeyStore,
        forward_credential: bool = False,
    ) -> None:
        self.id = id
        self.sources = sources
        self.keys = keys
        self.forward_credential = forward_credential

    def verified(self, credential: str, now: float) -> Identity | None:
        """Keys are looked up by :meth:`authenticate` (no cache of identities)."""
        return None

    async def authenticate(self, credential: str, now: float) -> Identity | None:
        """The key's identity; None for a JWT (another authenticator's); else raise.

        Unknown, disabled and expired keys raise :class:`InvalidCredentials`
        naming at most the key's id.
        """
        if looks_like_jwt(credential):
            return None
        entry = self.keys.lookup(credential)
        if entry is None:
            raise InvalidCredentials("unknown API key")
        if entry.disabled:
            raise InvalidCredentials(f"API key {entry.id!r} is disabled")
        expires_at = entry.expires.timestamp() if entry.expires is not None else None
        if expires_at is not None and expires_at <= now:
            raise InvalidCredentials(f"API key {entry.id!r} has expired")
        return Identity(
            subject=entry.subject,
            roles=entry.roles,
            scopes=entry.scopes,
            authenticator=self.id,
            credential_type="api_key",
            key_id=entry.id,
            expires_at=expires_at,
        )

    async def aclose(self) -> None:
        """Nothing to release: the store is in memory."""


# -- validation, shared by the loader and new_key ------------------------------------------

_LOWER_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# C0, DEL and C1 controls, which identity headers refuse (401), plus lone
# surrogates, which cannot be written to a file.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Roles travel joined by "," and scopes by " " (RFC 6749 section 3.3), so
# neither may hold its separator.
_BAD_ROLE = re.compile(r"[,\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_SCOPE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    if _CONTROL.search(value):
        raise ValueError("expected a string without control characters")
    return value


def _sha256(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError("expected the key's SHA-256 as 64 hex characters")
    return value.lower()


def _names(what: str, bad: re.Pattern[str], rule: str) -> Callable[[object], tuple[str, ...]]:
    def check(value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a list of non-empty {what} strings")
        for item in value:
            if bad.search(item):
                raise ValueError(f"{what} {item!r} must not contain {rule}")
        return tuple(value)

    return check


def _expires(value: object) -> datetime:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    if isinstance(value, datetime):
        problem = "a date-time without a timezone"
    elif isinstance(value, date):
        problem = "a date without a time"
    else:
        problem = f"a {type(value).__name__}"
    raise ValueError(f"expected a date-time with a timezone (2027-01-01T00:00:00Z), got {problem}")


def _disabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


_FIELDS: dict[str, Callable[[object], Any]] = {
    "id": _text,
    "sha256": _sha256,
    "subject": _text,
    "roles": _names("role", _BAD_ROLE, '",", whitespace or control characters'),
    "scopes": _names("scope", _BAD_SCOPE, "whitespace or control characters"),
    "expires": _expires,
    "disabled": _disabled,
}
_REQUIRED = ("id", "sha256", "subject")


# -- the keys file -------------------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]*?)\s*\]")
_KEY = re.compile(r"""\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")
_TOML_POSITION = re.compile(r"(.*) \(at line (\d+), column (\d+)\)")


@dataclass(frozen=True, slots=True)
class _Lines:
    """Line numbers, which tomllib does not give: found by scanning the text for
    table headers and ``name =`` lines (only a multi-line string could mislead it).
    """

    top: dict[str, int]
    blocks: list[dict[str, int]]  # per [[keys]] block: "" -> its header, name -> its line

    @classmethod
    def scan(cls, text: str) -> _Lines:
        top: dict[str, int] = {}
        blocks: list[dict[str, int]] = []
        current: dict[str, int] | None = top
        for number, line in enumerate(text.split("\n"), start=1):
            if header := _HEADER.match(line):
                name = header[2].split(".")[0].strip().strip("\"'")
                top.setdefault(name, number)
                if header[1] == "[[" and header[2] == "keys":
                    blocks.append({"": number})
                    current = blocks[-1]
                else:
                    current = None
            elif current is not None and (key := _KEY.match(line)):
                current.setdefault(key[1], number)
        return cls(top, blocks)

    def of(self, index: int, name: str = "") -> int | None:
        block = self.blocks[index] if index < len(self.blocks) else {}
        return block.get(name, block.get("", self.top.get("keys")))


def load_keys_file(path: str | os.PathLike[str]) -> KeyStore:
    """Load a keys file; raise :class:`ConfigError` listing every problem in it.

    Each issue names its place (``keys[2].sha256``) and line. A file without
    keys gives an empty store.
    """
    file = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        issue = ConfigIssue("", f"cannot read the file: {exc.strerror}")
        raise ConfigError(file, [issue]) from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(file, [ConfigIssue("", "expected UTF-8 text", line)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [_syntax_issue(str(exc), text)]) from None
    entries, issues = _validate(data, _Lines.scan(text))
    if issues:
        raise ConfigError(file, issues)
    return KeyStore(entries)


def _syntax_issue(message: str, text: str) -> ConfigIssue:
    if position := _TOML_POSITION.fullmatch(message):
        detail, line, column = position.groups()
        return ConfigIssue("", f"invalid TOML: {detail} (column {column})", int(line))
    if message.endswith(" (at end of document)"):
        detail = message.removesuffix(" (at end of document)")
        return ConfigIssue("", f"invalid TOML: {detail} at the end", text.count("\n") + 1)
    return ConfigIssue("", f"invalid TOML: {message}")


def _validate(data: dict[str, Any], lines: _Lines) -> tuple[list[ApiKeyEntry], list[ConfigIssue]]:
    issues = [
        ConfigIssue(name, "unknown key: the file holds only [[keys]] tables", lines.top.get(name))
        for name in data
        if name != "keys"
    ]
    tables = data.get("keys", [])
    if not isinstance(tables, list):
        issues.append(ConfigIssue("keys", "expected [[keys]] tables", lines.top.get("keys")))
        tables = []
    entries: list[ApiKeyEntry] = []
    first_with: dict[tuple[str, str], str] = {}  # ("id" | "sha256", value) -> "keys[N]"
    for index, table in enumerate(tables):
        where = f"keys[{index}]"
        if not isinstance(table, dict):
            issues.append(ConfigIssue(where, "expected a table", lines.of(index)))
            continue
        found = len(issues)
        fields: dict[str, Any] = {}
        for name, value in table.items():
            check = _FIELDS.get(name)
            try:
                if check is None:
                    raise ValueError(f"unknown key: expected one of {', '.join(_FIELDS)}")
                fields[name] = check(value)
            except ValueError as exc:
                issues.append(ConfigIssue(f"{where}.{name}", str(exc), lines.of(index, name)))
        for name in _REQUIRED:
            if name not in table:
                issues.append(ConfigIssue(f"{where}.{name}", "required", lines.of(index)))
        for name in ("id", "sha256"):
            if name in fields:
                first = first_with.setdefault((name, fields[name]), where)
                if first != where:
                    message = f"repeats the {name} of {first}: each key needs its own"
                    issues.append(ConfigIssue(f"{where}.{name}", message, lines.of(index, name)))
        if len(issues) == found:
            entries.append(ApiKeyEntry(**fields))
    return entries, issues


# -- new keys ------------------------------------------------------------------------------


def new_key(
    *,
    subject: str,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    key_id: str | None = None,
    expires: datetime | None = None,
) -> tuple[str, str]:
    """A new random key and the ``[[keys]]`` entry (its digest, never the key) to paste.

    Raises ValueError when an input breaks the keys file's rules.

    >>> key, entry = new_key(subject="svc-reporting", roles=["service"])
    >>> key.startswith("eak_"), key in entry
    (True, False)
    """
    # 32 random bytes: 256 bits, far past the 2^-128 guessing bound of RFC 6749 section 10.10.
    key = "eak_" + secrets.token_urlsafe(32)
    given: dict[str, object] = {
        "subject": subject,
        "id": key_id if key_id is not None else f"{subject}-{secrets.token_hex(4)}",
        "roles": roles if isinstance(roles, str) else list(roles),
        "scopes": scopes if isinstance(scopes, str) else list(scopes),
        "expires": expires,
    }
    fields: dict[str, Any] = {"sha256": _digest_of(key)}
    for name, value in given.items():
        try:
            fields[name] = None if value is None else _FIELDS[name](value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    lines = ["[[keys]]"]
    for name in ("id", "sha256", "subject", "roles", "scopes", "expires"):
        if fields[name]:
            lines.append(f"{name} = {_toml_value(fields[name])}")
    return key, "\n".join(lines) + "\n"


def _toml_value(value: str | tuple[str, ...] | datetime) -> str:
    if isinstance(value, datetime):
        # In UTC, so odd offsets (seconds, from old zone data) still make valid TOML.
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # A JSON string without surrogates or control characters is a TOML basic string.
    return json.dumps(value, ensure_ascii=False)
