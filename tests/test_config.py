"""Loading the policy file: every error names the file, the key path, the line and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgeauth import ConfigError, load_policy
from edgeauth.policy import Policy

from .helpers import SECRET, SEED_POLICY, self_signed, write_policy

JWT = f"""
[authenticators.session]
type = "jwt"
from = "cookie:session"
algorithms = ["HS256"]
secret = "{SECRET}"
"""


def load_text(tmp_path: Path, text: str, **kwargs: object) -> Policy:
    return load_policy(write_policy(tmp_path, textwrap.dedent(text)), **kwargs)  # type: ignore[arg-type]


def errors_of(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None
) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_policy(write_policy(tmp_path, textwrap.dedent(text)), environ=environ or {})
    assert info.value.file.endswith("edgeauth.toml")
    return [(i.location, i.line, i.message) for i in info.value.issues]


def test_seed_policy_loads(tmp_path: Path) -> None:
    """DESIGN.md's example (without rate limit and JWKS) loads and compiles."""
    policy = load_text(tmp_path, SEED_POLICY)
    assert len(policy.rules) == 6
    assert set(policy.authenticators) == {"session", "keys"}
    assert not policy.default_allow


def test_env_variables_are_substituted(tmp_path: Path) -> None:
    """${VAR} takes its value from the environment."""
    text = (
        JWT.replace(SECRET, "${SESSION_SECRET}")
        + '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    )
    policy = load_policy(write_policy(tmp_path, text), environ={"SESSION_SECRET": SECRET})
    assert "session" in policy.authenticators


def test_missing_env_variable_is_an_error_at_its_key(tmp_path: Path) -> None:
    """A ${VAR} that is not set names the variable, the key and the line."""
    text = (
        JWT.replace(SECRET, "${SESSION_SECRET}")
        + '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    )
    errors = errors_of(tmp_path, text)
    assert (
        "authenticators.session.secret",
        6,
        "environment variable SESSION_SECRET is not set",
    ) in errors


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    """A key this version does not support is a load error, never ignored."""
    text = (
        JWT
        + '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\nrequire.role = ["admin"]\n\n[servr]\nx = 1\n'
    )
    errors = errors_of(tmp_path, text)
    locations = {e[0]: e for e in errors}
    assert locations["rules[0].require.role"][1] == 10
    assert "unknown key" in locations["rules[0].require.role"][2]
    assert locations["servr"][1] == 12


def test_undefined_authenticator_is_an_error(tmp_path: Path) -> None:
    """A rule naming an undefined authenticator: rules[N].authenticate[i]."""
    text = (
        JWT
        + '[[rules]]\nmatch = "/a"\npublic = true\n\n[[rules]]\nmatch = "/**"\nauthenticate = ["session", "sesion"]\n'
    )
    errors = errors_of(tmp_path, text)
    assert ("rules[1].authenticate[1]", 13, "no authenticator 'sesion' is defined") in errors


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    """Several problems in one file come back in one ConfigError."""
    text = """
    [authenticators.partner]
    type = "jwt"
    from = "bearer"
    algorithms = ["RS256", "HS256", "none"]
    jwks_url = "http://idp.example/jwks.json"

    [[rules]]
    match = "api/**"
    kind = "pages"

    [[rules]]
    match = "/x"
    """
    errors = errors_of(tmp_path, text)
    locations = [e[0] for e in errors]
    assert "authenticators.partner.algorithms[2]" in locations
    assert "authenticators.partner.algorithms" in locations  # HS and RS mixed
    assert "rules[0].kind" in locations
    assert "rules[1]" in locations  # neither public nor authenticate
    assert len(errors) >= 4
    message = str(ConfigError("f", [])).splitlines()[0]
    assert message == "f: 0 errors"


@pytest.mark.parametrize(
    ("snippet", "location", "expected"),
    [
        ('algorithms = ["HS256"]\nsecret = "short"', "authenticators.a.secret", "32"),
        ('algorithms = ["HS512"]\nsecret = "' + "x" * 40 + '"', "authenticators.a.secret", "64"),
        (
            'algorithms = ["HS256", "RS256"]\nsecret = "' + "x" * 40 + '"',
            "authenticators.a.algorithms",
            "mixed",
        ),
        (
            'algorithms = ["RS256"]\njwks_url = "https://idp.example/jwks"\naudience = "x"',
            "authenticators.a.issuer",
            "required",
        ),
        (
            'algorithms = ["RS256"]\njwks_url = "https://idp.example/jwks"\nissuer = "x"',
            "authenticators.a.audience",
            "required",
        ),
        (
            'algorithms = ["RS256"]\njwks_url = "http://idp.example/jwks"\nissuer = "x"\naudience = "y"',
            "authenticators.a.jwks_url",
            "https",
        ),
        (
            'algorithms = ["RS256"]\npublic_key = "missing.pem"\nissuer = "x"\naudience = "y"',
            "authenticators.a.public_key",
            "cannot read",
        ),
        ('algorithms = ["HS256"]', "authenticators.a", "exactly one of"),
        ('algorithms = ["RS256"]\nsecret = "' + "x" * 40 + '"', "authenticators.a.secret", "HS*"),
        (
            'algorithms = ["HS256"]\nsecret = "!!"\nsecret_encoding = "base64"',
            "authenticators.a.secret",
            "base64",
        ),
        (
            'algorithms = ["none"]\nsecret = "' + "x" * 40 + '"',
            "authenticators.a.algorithms[0]",
            "unsupported",
        ),
        (
            'algorithms = ["HS256"]\nsecret = "' + "x" * 40 + '"\nany_issuer = true\nissuer = "x"',
            "authenticators.a.any_issuer",
            "contradicts",
        ),
        (
            'algorithms = ["HS256"]\nsecret = "' + "x" * 40 + '"\nleeway = "5"',
            "authenticators.a.leeway",
            "number",
        ),
    ],
)
def test_jwt_authenticator_errors(
    tmp_path: Path, snippet: str, location: str, expected: str
) -> None:
    """Strict JWT settings are enforced at load with a message saying what was expected."""
    text = f'[authenticators.a]\ntype = "jwt"\nfrom = "bearer"\n{snippet}\n\n[[rules]]\nmatch = "/**"\nauthenticate = ["a"]\n'
    errors = errors_of(tmp_path, text)
    matching = [e for e in errors if e[0] == location]
    assert matching, errors
    assert expected in matching[0][2]
    assert matching[0][1] is not None


def test_waivers_allow_any_issuer_and_audience(tmp_path: Path) -> None:
    """any_issuer / any_audience = true explicitly waive the checks for public keys."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pem").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = '[authenticators.a]\ntype = "jwt"\nfrom = "bearer"\nalgorithms = ["ES256"]\npublic_key = "k.pem"\nany_issuer = true\nany_audience = true\n\n[[rules]]\nmatch = "/**"\nauthenticate = ["a"]\n'
    assert "a" in load_text(tmp_path, text).authenticators


@pytest.mark.parametrize(
    ("identity", "location", "expected"),
    [
        ('headers = { "authorization" = "subject" }', "identity.headers.authorization", "reserved"),
        ('headers = { "cookie" = "subject" }', "identity.headers.cookie", "reserved"),
        ('headers = { "connection" = "subject" }', "identity.headers.connection", "reserved"),
        (
            'headers = { "X-User" = "subject", "x-user" = "roles" }',
            "identity.headers.x-user",
            "twice",
        ),
        ('headers = { "x-user" = "email" }', "identity.headers.x-user", "claim:NAME"),
        ('headers = { "x user" = "subject" }', 'identity.headers["x user"]', "header name"),
        ('strip = ["host"]', "identity.strip[0]", "reserved"),
    ],
)
def test_identity_header_errors(
    tmp_path: Path, identity: str, location: str, expected: str
) -> None:
    """Reserved names, names that differ only by case, and unknown sources are load errors."""
    text = f'[identity]\n{identity}\n\n[[rules]]\nmatch = "/**"\npublic = true\n'
    errors = errors_of(tmp_path, text)
    matching = [e for e in errors if e[0] == location]
    assert matching, errors
    assert expected in matching[0][2]


@pytest.mark.parametrize(
    ("rule", "location", "expected"),
    [
        ('match = "api/**"\npublic = true', "rules[0].match", "start with '/'"),
        ('match = "/a/**b"\npublic = true', "rules[0].match", "whole segment"),
        ('match = "/a/../b"\npublic = true', "rules[0].match", "'..'"),
        ('match = "/a%2fb"\npublic = true', "rules[0].match", "'%'"),
        ('match = ["/a", "/b?x"]\npublic = true', "rules[0].match[1]", "'?'"),
        ('match = "/a"\nmethods = ["GET POST"]\npublic = true', "rules[0].methods[0]", "method"),
        ('match = "/a"\nhosts = ["*"]\npublic = true', "rules[0].hosts[0]", "host name"),
        ('match = "/a"\nkind = "page"\nauthenticate = ["s"]', "rules[0]", "login_url"),
        (
            'match = "/a"\nkind = "page"\nauthenticate = ["s"]\nlogin_url = "//evil.example"',
            "rules[0].login_url",
            "path",
        ),
        ('match = "/a"\npublic = true\nrequire.roles = ["x"]', "rules[0].require", "require"),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = ["*"], credentials = true }',
            "rules[0].cors.origins",
            "credentials",
        ),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = ["https://a.example/"] }',
            "rules[0].cors.origins[0]",
            "origin",
        ),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = ["https://a.example:443"] }',
            "rules[0].cors.origins[0]",
            "expected 'https://a.example': browsers send an origin without its scheme's default",
        ),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = ["http://a.example:80"] }',
            "rules[0].cors.origins[0]",
            "would never match",
        ),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = ["https://a.example:99999"] }',
            "rules[0].cors.origins[0]",
            "expected an origin like",
        ),
        (
            'match = "/a"\nauthenticate = ["s"]\ncors = { origins = [] }',
            "rules[0].cors.origins",
            "",
        ),
        ('match = "/a"\npublic = true\nmax_body = -1', "rules[0].max_body", ""),
        ('id = "a b"\nmatch = "/a"\npublic = true', "rules[0].id", "rule id"),
    ],
)
def test_rule_errors(tmp_path: Path, rule: str, location: str, expected: str) -> None:
    """Patterns, methods, hosts, login URLs, CORS and requirements are validated at load."""
    text = JWT.replace("session", "s") + f"\n[[rules]]\n{rule}\n"
    errors = errors_of(tmp_path, text)
    matching = [e for e in errors if e[0] == location]
    assert matching, errors
    assert expected in matching[0][2]


def test_repeated_rule_ids_are_errors(tmp_path: Path) -> None:
    """Two rules may not share an id."""
    text = '[[rules]]\nid = "a"\nmatch = "/a"\npublic = true\n\n[[rules]]\nid = "a"\nmatch = "/b"\npublic = true\n'
    assert ("rules[1].id", 7, "rule id 'a' is used twice") in errors_of(tmp_path, text)


def test_keys_file_errors_are_reported_through_the_policy(tmp_path: Path) -> None:
    """A bad keys file is named, with its own line, under the authenticator's keys_file."""
    (tmp_path / "bad-keys.toml").write_text('[[keys]]\nid = "k"\nsubject = "s"\n', encoding="utf-8")
    text = '[authenticators.k]\ntype = "api_key"\nkeys_file = "bad-keys.toml"\n\n[[rules]]\nmatch = "/**"\nauthenticate = ["k"]\n'
    errors = errors_of(tmp_path, text)
    assert errors[0][0] == "authenticators.k.keys_file"
    assert "bad-keys.toml" in errors[0][2] and "sha256" in errors[0][2]
    assert len(errors) == 1  # the rule referring to it is not blamed twice


@pytest.mark.parametrize(
    ("server", "location"),
    [
        ('trusted_proxies = ["10.0.0.0/33"]', "server.trusted_proxies[0]"),
        ('public_origin = "https://a.example/path"', "server.public_origin"),
        ('public_origin = "https://a.example:443"', "server.public_origin"),
        ('upstream = "ftp://x"', "server.upstream"),
        ('upstream = "http://user:password@127.0.0.1:3000"', "server.upstream"),
        ('upstream = "http://127.0.0.1:3000/?a=b"', "server.upstream"),
        ('upstream = "http://127.0.0.1:3000/#f"', "server.upstream"),
        ('upstream = "http://127.0.0.1:99999"', "server.upstream"),
        ('upstream = "http://[::1:3000"', "server.upstream"),
        ('upstream = "http://127.0.0.1:"', "server.upstream"),
        ('upstream = "http://exa mple.com:3000"', "server.upstream"),
        ('public_origin = "https://[::1"', "server.public_origin"),
        ('listen = "127.0.0.1:²"', "server.listen"),
        ('listen = "nonsense"', "server.listen"),
        ('listen = "127.0.0.1:99999"', "server.listen"),
        ('tls_cert = "c.pem"', "server.tls_cert"),
        ('tls_cert = "absent.crt"\ntls_key = "absent.key"', "server.tls_cert"),
        ("workers = 0", "server.workers"),
    ],
)
def test_server_errors(tmp_path: Path, server: str, location: str) -> None:
    """[server] values are checked when the policy loads (``edgeauth check``
    finds what ``edgeauth serve`` would refuse), each error on its line."""
    text = f'[server]\n{server}\n\n[[rules]]\nmatch = "/**"\npublic = true\n'
    errors = errors_of(tmp_path, text)
    assert location in [e[0] for e in errors]
    assert all(line is not None for _, line, _ in errors)


def test_the_tls_certificate_and_key_are_loaded_with_the_policy(tmp_path: Path) -> None:
    """tls_cert and tls_key must load together as a certificate and its key:
    a missing file is named, and so is a key that is not the certificate's,
    before anything listens; a matching pair loads."""
    self_signed(tmp_path, "one")
    self_signed(tmp_path, "two")
    rules = '\n[[rules]]\nmatch = "/**"\npublic = true\n'
    pair = '[server]\ntls_cert = "one.crt"\ntls_key = "{}"\n' + rules
    [(location, line, message)] = errors_of(tmp_path, pair.format("two.key"))
    assert (location, line) == ("server.tls_cert", 2)
    assert "one.crt" in message and "two.key" in message
    [(_, _, message)] = errors_of(tmp_path, pair.format("absent.key"))
    assert "absent.key" in message and "No such file" in message
    (tmp_path / "garbage.key").write_text("not a key\n", encoding="utf-8")
    [(_, _, message)] = errors_of(tmp_path, pair.format("garbage.key"))
    assert "garbage.key" in message
    policy = load_policy(write_policy(tmp_path, pair.format("one.key")), environ={})
    assert policy.server.tls_cert == str(tmp_path / "one.crt")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    """A missing file and a TOML syntax error name the file and the line."""
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "absent.toml")
    assert "cannot read the file" in str(info.value)
    (tmp_path / "bad.toml").write_text('[[rules]]\nmatch = "/a"\nmatch = "/b"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "bad.toml")
    assert info.value.issues[0].line == 3
    assert str(info.value).startswith(f"{tmp_path / 'bad.toml'}: 1 error")


def test_no_rules_is_an_error(tmp_path: Path) -> None:
    """A policy needs at least one rule."""
    assert "rules" in [e[0] for e in errors_of(tmp_path, '[default]\naction = "allow"\n')]


def test_unknown_authenticator_type(tmp_path: Path) -> None:
    """type must be jwt or api_key."""
    text = '[authenticators.x]\ntype = "ldap"\n\n[[rules]]\nmatch = "/**"\nauthenticate = ["x"]\n'
    assert ("authenticators.x.type", 2, "expected 'jwt' or 'api_key', got 'ldap'") in errors_of(
        tmp_path, text
    )


def test_bad_credential_places(tmp_path: Path) -> None:
    """from takes bearer, cookie:NAME or header:NAME."""
    text = JWT.replace(
        'from = "cookie:session"', 'from = ["bearer", "query:token", "header:Authorization"]'
    )
    text += '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    locations = [e[0] for e in errors_of(tmp_path, text)]
    assert "authenticators.session.from[1]" in locations
    assert "authenticators.session.from[2]" in locations


@pytest.mark.parametrize("place", ["cookie:a b", "cookie:session=x", "cookie:a;b", "header:x api"])
def test_a_place_name_must_be_a_token(tmp_path: Path, place: str) -> None:
    """A cookie or header name that no request can carry (spaces, '=', ';') is
    a load error naming the key, not a place that silently never matches."""
    text = JWT.replace('from = "cookie:session"', f'from = "{place}"')
    text += '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    found = [e for e in errors_of(tmp_path, text) if e[0] == "authenticators.session.from"]
    assert found and "RFC 9110 token" in found[0][2], found


def test_forward_auth_section(tmp_path: Path) -> None:
    """[forward_auth] takes a path, a dialect and the gateways' addresses."""
    base = '\n[[rules]]\nmatch = "/**"\npublic = true\n'
    policy = load_text(
        tmp_path, '[forward_auth]\ndialect = "nginx"\ntrusted = ["127.0.0.1"]\n' + base
    )
    assert policy.forward_auth is not None
    assert policy.forward_auth.path == "/_edgeauth/auth"
    assert policy.forward_auth.trusts("127.0.0.1")
    assert not policy.forward_auth.trusts("::1")
    assert load_text(tmp_path, base).forward_auth is None
    errors = errors_of(
        tmp_path, '[forward_auth]\npath = "auth"\ndialect = "haproxy"\ntrusted = ["x"]\n' + base
    )
    locations = {e[0] for e in errors}
    assert {"forward_auth.dialect"} <= locations
    errors = errors_of(
        tmp_path, '[forward_auth]\npath = "auth"\ndialect = "caddy"\ntrusted = ["x"]\n' + base
    )
    assert {"forward_auth.path", "forward_auth.trusted[0]"} <= {e[0] for e in errors}


def test_missing_env_variable_draws_no_misleading_follow_up_errors(tmp_path: Path) -> None:
    """An unset ${VAR} secret is reported once, not also as 'no key configured'."""
    text = (
        JWT.replace(SECRET, "${SESSION_SECRET}")
        + '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    )
    assert [e[0] for e in errors_of(tmp_path, text)] == ["authenticators.session.secret"]


def test_none_algorithm_is_not_called_a_mix(tmp_path: Path) -> None:
    """algorithms = ["HS256", "none"] is one unsupported algorithm, not a family mix."""
    text = (
        JWT.replace('["HS256"]', '["HS256", "none"]')
        + '[[rules]]\nmatch = "/**"\nauthenticate = ["session"]\n'
    )
    errors = errors_of(tmp_path, text)
    assert [e[0] for e in errors] == ["authenticators.session.algorithms[1]"]


def test_strip_list_reserved_name_message(tmp_path: Path) -> None:
    """A reserved name in [identity] strip says it cannot be stripped."""
    errors = errors_of(
        tmp_path, '[identity]\nstrip = ["Cookie"]\n\n[[rules]]\nmatch = "/**"\npublic = true\n'
    )
    assert errors[0][2] == "'Cookie' is reserved: it cannot be stripped"


def test_schema_errors_read_like_the_others_in_file_order(tmp_path: Path) -> None:
    """A value of none of a key's types is one error naming what was expected;
    bounds say the bound and the value; errors come in the file's order."""
    text = """\
        [server]
        max_head_bytes = 10
        read_timeout = 0

        [[rules]]
        match = 5
        public = true
        max_body = -1
        cors = { origins = [], max_age = -1 }

        [[rules]]
        match = "/x"
        authenticate = ["nope"]
        rate_limit = 7
        """
    assert errors_of(tmp_path, text) == [
        ("server.max_head_bytes", 2, "expected at least 1024, got 10"),
        ("server.read_timeout", 3, "expected more than 0.0, got 0"),
        ("rules[0].match", 6, "expected a string or a list"),
        ("rules[0].max_body", 8, "expected at least 0, got -1"),
        ("rules[0].cors.origins", 9, "expected at least 1 item(s)"),
        ("rules[0].cors.max_age", 9, "expected at least 0, got -1"),
        ("rules[1].rate_limit", 14, "expected a string or a list"),
    ]


def test_a_list_with_one_wrong_item_names_the_item(tmp_path: Path) -> None:
    """Of a key that takes a string or a list, a list with a wrong item is
    reported at the item, not as "expected a string"."""
    text = """\
        [[rules]]
        match = ["/a", 5]
        public = true
        rate_limit = [5]
        """
    assert errors_of(tmp_path, text) == [
        ("rules[0].match[1]", 2, "expected a string"),
        ("rules[0].rate_limit[0]", 4, "expected a string"),
    ]


@pytest.mark.parametrize(
    "upstream",
    [
        "http://127.0.0.1:3000",
        "http://127.0.0.1:3000/prefix",
        "https://[::1]:8443",
        "http://my_app:3000",
        "http://app.internal.:80",
    ],
)
def test_upstreams_that_load(tmp_path: Path, upstream: str) -> None:
    """Host names (with '_', as container names have), IPv6 and a path prefix load."""
    text = f'[server]\nupstream = "{upstream}"\n\n[[rules]]\nmatch = "/**"\npublic = true\n'
    assert load_policy(write_policy(tmp_path, text), environ={}).server.upstream == upstream


@pytest.mark.parametrize(
    ("url", "loads"),
    [
        ("https://idp.example/jwks.json", True),
        ("http://127.0.0.1:8080/jwks.json", True),
        ("http://127.0.0.2:8080/jwks.json", True),
        ("http://[::1]:8080/jwks.json", True),
        ("http://localhost:8080/jwks.json", True),
        ("http://idp.example/jwks.json", False),
        ("http://10.0.0.1/jwks.json", False),
    ],
)
def test_jwks_url_is_https_or_loopback(tmp_path: Path, url: str, loads: bool) -> None:
    """A key set is fetched over https, or over http from a loopback address
    (127.0.0.0/8, ::1, localhost) only."""
    text = (
        f'[authenticators.idp]\ntype = "jwt"\nfrom = "bearer"\nalgorithms = ["RS256"]\n'
        f'jwks_url = "{url}"\nissuer = "i"\naudience = "a"\n\n'
        '[[rules]]\nmatch = "/**"\nauthenticate = ["idp"]\n'
    )
    if loads:
        load_policy(write_policy(tmp_path, text), environ={})
    else:
        [(location, _, message)] = errors_of(tmp_path, text)
        assert location == "authenticators.idp.jwks_url" and "https://" in message
