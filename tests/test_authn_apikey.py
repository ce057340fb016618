from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgeauth.authn.apikey import (
    ApiKeyAuthenticator,
    ApiKeyEntry,
    KeyStore,
    load_keys_file,
    new_key,
)
from edgeauth.authn.base import Authenticator, CredentialSource
from edgeauth.errors import ConfigError, InvalidCredentials

KEY1 = "eak_first-key-0123456789abcdefghijklmnopqrstuvwxyz"
KEY2 = "eak_second-key-0123456789abcdefghijklmnopqrstuvwxy"
D1 = hashlib.sha256(KEY1.encode()).hexdigest()
D2 = hashlib.sha256(KEY2.encode()).hexdigest()
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api-keys.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_keys_file(path)
    assert caught.value.file == str(path)
    return caught.value


def authenticator(*entries: ApiKeyEntry) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(
        "keys",
        sources=(CredentialSource("bearer"), CredentialSource("header", "x-api-key")),
        keys=KeyStore(entries),
    )


# -- loading -------------------------------------------------------------------------------


def test_load_reads_every_field(tmp_path: Path) -> None:
    """A full entry loads with every field; upper-case hex is lower-cased; optionals default."""
    path = write(
        tmp_path,
        f"""# comment
[[keys]]
id = "reporting-2026"
sha256 = "{D1.upper()}"
subject = "svc-reporting"
roles = ["service", "reader"]
scopes = ["reports:read", "a,b"]
expires = 2027-01-01T00:00:00+02:00
disabled = true

[[keys]]
id = "minimal"
sha256 = "{D2}"
subject = "svc min"
""",
    )
    store = load_keys_file(path)
    assert len(store) == 2
    assert store.lookup(KEY1) == ApiKeyEntry(
        id="reporting-2026",
        sha256=D1,
        subject="svc-reporting",
        roles=("service", "reader"),
        scopes=("reports:read", "a,b"),
        expires=datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        disabled=True,
    )
    assert store.lookup(KEY2) == ApiKeyEntry(id="minimal", sha256=D2, subject="svc min")


def test_load_accepts_an_inline_array_of_tables(tmp_path: Path) -> None:
    """`keys = [{...}]` is the same TOML data as [[keys]] tables and loads too."""
    path = write(tmp_path, f'keys = [{{ id = "a", sha256 = "{D1}", subject = "s" }}]\n')
    assert load_keys_file(path).lookup(KEY1) == ApiKeyEntry("a", D1, "s")


@pytest.mark.parametrize("text", ["", "# no keys yet\n", "keys = []\n"])
def test_load_without_keys_gives_an_empty_store(tmp_path: Path, text: str) -> None:
    """A file without keys loads as an empty store that knows no key."""
    store = load_keys_file(write(tmp_path, text))
    assert len(store) == 0
    assert store.lookup(KEY1) is None


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file and the reason."""
    error = load_error(tmp_path / "absent.toml")
    assert [(i.location, i.line) for i in error.issues] == [("", None)]
    assert "No such file" in error.issues[0].message


def test_load_unreadable_path(tmp_path: Path) -> None:
    """A path that cannot be read as a file (a directory) is a ConfigError."""
    error = load_error(tmp_path)
    assert "cannot read the file" in error.issues[0].message


def test_load_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error reports tomllib's line and column."""
    path = write(tmp_path, f'[[keys]]\nid = "a"\nsha256 = "{D1}"\nsubject = ?\n')
    error = load_error(path)
    assert [(i.location, i.line) for i in error.issues] == [("", 4)]
    assert "invalid TOML" in error.issues[0].message
    assert "column 11" in error.issues[0].message


def test_load_toml_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    """tomllib's refusal to overwrite a key is reported at the repeated line."""
    error = load_error(write(tmp_path, '[[keys]]\nid = "a"\nid = "b"\nsubject = "s"\n'))
    assert [i.line for i in error.issues] == [3]
    assert "Cannot overwrite a value" in error.issues[0].message


def test_load_toml_error_at_end_of_document(tmp_path: Path) -> None:
    """An error tomllib places at the end of the document points at the last line."""
    error = load_error(write(tmp_path, '[[keys]]\nid = "a'))
    assert [i.line for i in error.issues] == [2]
    assert "Unterminated string" in error.issues[0].message


def test_load_toml_error_without_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TOML error message without a position is still reported, without a line."""

    def failing(text: str) -> dict[str, object]:
        raise tomllib.TOMLDecodeError("odd failure")

    monkeypatch.setattr(tomllib, "loads", failing)
    error = load_error(write(tmp_path, "keys = []\n"))
    assert [(i.location, i.line, i.message) for i in error.issues] == [
        ("", None, "invalid TOML: odd failure")
    ]


def test_load_rejects_non_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported with their line."""
    path = tmp_path / "api-keys.toml"
    path.write_bytes(b'[[keys]]\nid = "a"\nsubject = "\xff"\n')
    error = load_error(path)
    assert [(i.location, i.line) for i in error.issues] == [("", 3)]
    assert "UTF-8" in error.issues[0].message


# The bad entry is keys[1]: its [[keys]] header is line 8, id line 9, sha256 line 10,
# subject line 11 and the extra line, if any, line 12.
GOOD_ID, GOOD_SHA, GOOD_SUBJECT = 'id = "second"', f'sha256 = "{D2}"', 'subject = "svc-second"'


def bad_file(
    *, id: str = GOOD_ID, sha: str = GOOD_SHA, subject: str = GOOD_SUBJECT, extra: str = ""
) -> str:
    return (
        f'# API keys\n\n[[keys]]\nid = "first"\nsha256 = "{D1}"\nsubject = "svc-first"\n\n'
        f"[[keys]]\n{id}\n{sha}\n{subject}\n{extra}\n"
    )


FIELD_ERRORS = [
    # (file text, location, line, part of the message)
    (bad_file(id="# no id"), "keys[1].id", 8, "required"),
    (bad_file(sha="# no sha256"), "keys[1].sha256", 8, "required"),
    (bad_file(subject="# no subject"), "keys[1].subject", 8, "required"),
    (bad_file(id='id = ""'), "keys[1].id", 9, "non-empty string"),
    (bad_file(id="id = 7"), "keys[1].id", 9, "non-empty string"),
    (bad_file(id=r'id = "a\u0007b"'), "keys[1].id", 9, "control characters"),
    (bad_file(id='id = "first"'), "keys[1].id", 9, "repeats the id of keys[0]"),
    (bad_file(sha='sha256 = "abc"'), "keys[1].sha256", 10, "64 hex characters"),
    (bad_file(sha=f'sha256 = "{"g" * 64}"'), "keys[1].sha256", 10, "64 hex characters"),
    (bad_file(sha=f'sha256 = "{D2}0"'), "keys[1].sha256", 10, "64 hex characters"),
    (bad_file(sha="sha256 = 12"), "keys[1].sha256", 10, "64 hex characters"),
    (bad_file(sha=f'sha256 = "{D1}"'), "keys[1].sha256", 10, "repeats the sha256 of keys[0]"),
    (bad_file(sha=f'sha256 = "{D1.upper()}"'), "keys[1].sha256", 10, "repeats the sha256"),
    (bad_file(subject=r'subject = "svc\nx"'), "keys[1].subject", 11, "control characters"),
    (bad_file(subject=r'subject = "svc\u0085"'), "keys[1].subject", 11, "control characters"),
    (bad_file(subject="subject = 5"), "keys[1].subject", 11, "non-empty string"),
    (bad_file(extra='role = ["x"]'), "keys[1].role", 12, "unknown key"),
    (bad_file(extra='"key" = "eak_x"'), "keys[1].key", 12, "unknown key"),
    (bad_file(extra='roles = "admin"'), "keys[1].roles", 12, "list of non-empty role strings"),
    (bad_file(extra='roles = ["a", 1]'), "keys[1].roles", 12, "list of non-empty role strings"),
    (bad_file(extra='roles = [""]'), "keys[1].roles", 12, "list of non-empty role strings"),
    (bad_file(extra='roles = ["a,b"]'), "keys[1].roles", 12, "'a,b' must not contain"),
    (bad_file(extra='roles = ["a b"]'), "keys[1].roles", 12, "'a b' must not contain"),
    (bad_file(extra=r'roles = ["a\tb"]'), "keys[1].roles", 12, "must not contain"),
    (bad_file(extra=r'roles = ["a\u0001"]'), "keys[1].roles", 12, "must not contain"),
    (bad_file(extra="scopes = 3"), "keys[1].scopes", 12, "list of non-empty scope strings"),
    (bad_file(extra='scopes = ["read write"]'), "keys[1].scopes", 12, "'read write' must not"),
    (bad_file(extra=r'scopes = ["read\u007f"]'), "keys[1].scopes", 12, "must not contain"),
    (bad_file(extra="expires = 2027-01-01"), "keys[1].expires", 12, "a date without a time"),
    (
        bad_file(extra="expires = 2027-01-01T00:00:00"),
        "keys[1].expires",
        12,
        "date-time without a timezone",
    ),
    (bad_file(extra="expires = 10:00:00"), "keys[1].expires", 12, "got a time"),
    (bad_file(extra='expires = "2027-01-01T00:00:00Z"'), "keys[1].expires", 12, "got a str"),
    (bad_file(extra='disabled = "no"'), "keys[1].disabled", 12, "true or false"),
    (bad_file(extra="disabled = 0"), "keys[1].disabled", 12, "true or false"),
    ("version = 1\n", "version", 1, "unknown key"),
    ('[[keys]]\nid = "a"\n\n[extra]\nx = 1\n', "extra", 4, "unknown key"),
    ("keys = 5\n", "keys", 1, "expected [[keys]] tables"),
    ("keys = [1]\n", "keys[0]", 1, "expected a table"),
    (f'keys = [{{ id = "a", sha256 = "{D1}", subject = "" }}]\n', "keys[0].subject", 1, "empty"),
]


@pytest.mark.parametrize(("text", "location", "line", "message"), FIELD_ERRORS)
def test_load_reports_each_error_with_location_and_line(
    tmp_path: Path, text: str, location: str, line: int, message: str
) -> None:
    """Each rule of the keys file is checked and reported at its key and line."""
    issues = load_error(write(tmp_path, text)).issues
    if location.startswith("keys[1]"):  # keys[0] is valid: only keys[1] is at fault
        assert all(issue.location.startswith("keys[1].") for issue in issues)
    matching = [i for i in issues if i.location == location]
    assert len(matching) == 1, issues
    assert matching[0].line == line
    assert message in matching[0].message


def test_load_reports_all_errors_together(tmp_path: Path) -> None:
    """Every problem in the file is reported in one ConfigError, in file order."""
    path = write(
        tmp_path,
        f"""owner = "ops"
[[keys]]
id = "a"
sha256 = "nope"
subject = "s"
roles = ["x y"]

[[keys]]
subject = "t"
expires = 2027-01-01
colour = "red"

[[keys]]
id = "a"
sha256 = "{D1}"
subject = "u"
disabled = "yes"
""",
    )
    error = load_error(path)
    assert [(i.location, i.line) for i in error.issues] == [
        ("owner", 1),
        ("keys[0].sha256", 4),
        ("keys[0].roles", 6),
        ("keys[1].expires", 10),
        ("keys[1].colour", 11),
        ("keys[1].id", 8),
        ("keys[1].sha256", 8),
        ("keys[2].disabled", 17),
        ("keys[2].id", 14),
    ]
    assert str(error).startswith(f"{path}: 9 errors\n  line 1: owner: unknown key")


# -- the store -----------------------------------------------------------------------------


def test_lookup_hit_and_miss() -> None:
    """lookup finds an entry by its key's digest and nothing for any other string."""
    first, second = ApiKeyEntry("k1", D1, "a"), ApiKeyEntry("k2", D2, "b")
    store = KeyStore([first, second])
    assert len(store) == 2
    assert store.lookup(KEY1) is first
    assert store.lookup(KEY2) is second
    for guess in ("", KEY1 + "x", KEY1.upper(), D1, "\ud800"):
        assert store.lookup(guess) is None


def test_lookup_ends_with_a_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """lookup compares the stored and computed digests with hmac.compare_digest, which decides."""
    calls: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        calls.append((a, b))
        return original(a, b)

    store = KeyStore([ApiKeyEntry("k1", D1, "a")])
    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert store.lookup(KEY1) is not None
    assert calls == [(D1, D1)]
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    assert store.lookup(KEY1) is None


def test_store_rejects_bad_or_repeated_digests() -> None:
    """A store built in code refuses a digest that is not lower-case hex, or a repeated one."""
    with pytest.raises(ValueError, match="repeats the sha256"):
        KeyStore([ApiKeyEntry("a", D1, "s"), ApiKeyEntry("b", D1, "t")])
    with pytest.raises(ValueError, match="64 lower-case hex"):
        KeyStore([ApiKeyEntry("a", D1.upper(), "s")])


# -- the authenticator ---------------------------------------------------------------------


async def test_authenticate_valid_key() -> None:
    """A known, enabled, unexpired key gives the entry's identity, with no claims."""
    expires = datetime(2027, 1, 1, tzinfo=UTC)
    auth = authenticator(ApiKeyEntry("k1", D1, "svc", ("service",), ("r:read",), expires))
    identity = await auth.authenticate(KEY1, NOW)
    assert identity is not None
    assert (identity.subject, identity.roles, identity.scopes) == ("svc", ("service",), ("r:read",))
    assert dict(identity.claims) == {}
    assert identity.authenticator == "keys"
    assert identity.credential_type == "api_key"
    assert identity.key_id == "k1"
    assert identity.expires_at == expires.timestamp()
    assert identity.token_id is None


async def test_authenticate_key_without_expiry() -> None:
    """A key without `expires` has no expiry on its identity."""
    identity = await authenticator(ApiKeyEntry("k1", D1, "svc")).authenticate(KEY1, NOW)
    assert identity is not None
    assert identity.expires_at is None


async def test_authenticate_unknown_key_is_invalid() -> None:
    """An unknown key raises InvalidCredentials (deny, no fall-through) without the key."""
    with pytest.raises(InvalidCredentials) as caught:
        await authenticator(ApiKeyEntry("k1", D1, "svc")).authenticate(KEY2, NOW)
    assert KEY2 not in str(caught.value)


async def test_authenticate_expired_key_is_invalid() -> None:
    """A key whose `expires` is now or past is refused; a moment before, it is accepted."""
    auth = authenticator(ApiKeyEntry("k1", D1, "svc", expires=datetime.fromtimestamp(NOW, UTC)))
    assert await auth.authenticate(KEY1, NOW - 1) is not None
    with pytest.raises(InvalidCredentials, match="'k1' has expired") as caught:
        await auth.authenticate(KEY1, NOW)
    assert KEY1 not in str(caught.value)


async def test_authenticate_disabled_key_is_invalid() -> None:
    """A disabled key is refused, naming its id only."""
    auth = authenticator(ApiKeyEntry("k1", D1, "svc", disabled=True))
    with pytest.raises(InvalidCredentials, match="'k1' is disabled") as caught:
        await auth.authenticate(KEY1, NOW)
    assert KEY1 not in str(caught.value)


async def test_authenticate_leaves_jwts_to_other_authenticators() -> None:
    """A JWT-shaped credential is not an API key: None, even if its digest were stored."""
    jwt_digest = hashlib.sha256(JWT.encode()).hexdigest()
    auth = authenticator(ApiKeyEntry("k1", jwt_digest, "svc"))
    assert await auth.authenticate(JWT, NOW) is None


async def test_authenticator_settings_and_protocol() -> None:
    """The authenticator exposes its id and sources, withholds keys by default, closes cleanly."""
    auth: Authenticator = authenticator()
    assert auth.id == "keys"
    assert [str(s) for s in auth.sources] == ["bearer", "header:x-api-key"]
    assert auth.forward_credential is False
    store = KeyStore([])
    forwarding = ApiKeyAuthenticator("k", sources=(), keys=store, forward_credential=True)
    assert forwarding.forward_credential is True
    await auth.aclose()


# -- new keys ------------------------------------------------------------------------------


async def test_new_key_round_trip(tmp_path: Path) -> None:
    """A new key authenticates against its printed entry, loaded from a file that lacks the key."""
    expires = datetime(
        2027, 1, 1, 5, 30, 0, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    key, entry = new_key(
        subject='svc "reporting" \\ é',
        roles=["service", "reader"],
        scopes=("reports:read",),
        key_id="reporting-2026",
        expires=expires,
    )
    path = write(tmp_path, "# api keys\n\n" + entry)
    text = path.read_text(encoding="utf-8")
    assert key not in text
    assert key.removeprefix("eak_") not in text
    auth = ApiKeyAuthenticator("keys", sources=(), keys=load_keys_file(path))
    identity = await auth.authenticate(key, NOW)
    assert identity is not None
    assert identity.subject == 'svc "reporting" \\ é'
    assert identity.roles == ("service", "reader")
    assert identity.scopes == ("reports:read",)
    assert identity.key_id == "reporting-2026"
    assert identity.expires_at == expires.timestamp()


def test_new_key_defaults() -> None:
    """By default the entry has no roles, scopes or expiry, and the id is subject-<8 hex>."""
    key, entry = new_key(subject="svc")
    assert re.fullmatch(r"eak_[A-Za-z0-9_-]{43}", key)  # 32 random bytes, base64url
    lines = entry.splitlines()
    assert lines[0] == "[[keys]]"
    assert re.fullmatch(r'id = "svc-[0-9a-f]{8}"', lines[1])
    assert lines[2:] == [
        f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"',
        'subject = "svc"',
    ]


def test_new_keys_are_unique() -> None:
    """Every call gives a different key, digest and default id."""
    made = [new_key(subject="svc") for _ in range(200)]
    assert len({key for key, _ in made}) == 200
    assert len({entry.splitlines()[1] for _, entry in made}) == 200
    assert len({entry.splitlines()[2] for _, entry in made}) == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"subject": ""}, "subject: expected a non-empty string"),
        ({"subject": "svc\r\nx-user-id: admin"}, "subject: expected a string without control"),
        ({"subject": "svc", "key_id": ""}, "id: expected a non-empty string"),
        ({"subject": "svc", "key_id": "k\x00"}, "id: expected a string without control"),
        ({"subject": "svc", "roles": "admin"}, "roles: expected a list"),
        ({"subject": "svc", "roles": ["a,b"]}, "roles: role 'a,b' must not contain"),
        ({"subject": "svc", "roles": [""]}, "roles: expected a list of non-empty"),
        ({"subject": "svc", "scopes": ["a b"]}, "scopes: scope 'a b' must not contain"),
        ({"subject": "svc", "expires": datetime(2027, 1, 1)}, "expires: expected a date-time"),
    ],
)
def test_new_key_validates_like_the_loader(arguments: dict[str, object], message: str) -> None:
    """new_key refuses what the keys file would refuse, with the field's name."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        new_key(**arguments)  # type: ignore[arg-type]
