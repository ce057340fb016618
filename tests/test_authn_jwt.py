"""JwtAuthenticator and StaticKeys: accepted tokens, every rejection, claim mapping."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

from edgeauth.authn.base import CredentialSource
from edgeauth.authn.jwt import JwtAuthenticator, StaticKeys, check_algorithms
from edgeauth.errors import InvalidCredentials
from edgeauth.model import Identity
from tests.jwks_server import b64, mint, new_ec, new_ed25519, new_rsa, public_jwk

NOW = 1_700_000_000.0
ISS = "https://issuer.example"
AUD = "edge-api"
SECRET = bytes(range(64))  # long enough for HS512
HS_SECRET = SECRET[:32]
DROP = object()

RSA_KEY = new_rsa()
EC_KEYS = {
    "ES256": new_ec(ec.SECP256R1()),
    "ES384": new_ec(ec.SECP384R1()),
    "ES512": new_ec(ec.SECP521R1()),
}
ED_KEY = new_ed25519()
OTHER_RSA_KEY = new_rsa()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for ISS/AUD at NOW; a value of DROP removes the claim."""
    base: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "u1", "iat": NOW - 10, "exp": NOW + 300}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not DROP}


def pem(key: Any) -> Any:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def authenticator(
    algorithms: list[str] | None = None, keys: Any = None, **options: Any
) -> JwtAuthenticator:
    algorithms = ["HS256"] if algorithms is None else algorithms
    settings: dict[str, Any] = {"issuer": ISS, "audience": [AUD]} | options
    return JwtAuthenticator(
        "session",
        sources=(CredentialSource("bearer"),),
        algorithms=algorithms,
        keys=keys or StaticKeys.from_secret(HS_SECRET, algorithms),
        **settings,
    )


def rsa_authenticator(**options: Any) -> JwtAuthenticator:
    return authenticator(["RS256"], StaticKeys.from_pem(pem(RSA_KEY), ["RS256"]), **options)


def hs(payload: dict[str, Any] | bytes, **kwargs: Any) -> str:
    return mint(payload, HS_SECRET, "HS256", **kwargs)


def raw(payload: bytes) -> str:
    return hs(payload)


# --- accepted tokens ----------------------------------------------------------------


def _keys_for(alg: str) -> tuple[Any, StaticKeys]:
    """A signing key and the StaticKeys that verify it, one loading path per family."""
    if alg.startswith("HS"):
        return SECRET, StaticKeys.from_secret(SECRET, [alg])
    if alg[:2] in ("RS", "PS"):
        return RSA_KEY, StaticKeys.from_pem(pem(RSA_KEY), [alg])
    if alg == "EdDSA":
        return ED_KEY, StaticKeys.from_pem(pem(ED_KEY), [alg])
    key = EC_KEYS[alg]
    return key, StaticKeys.from_jwks({"keys": [public_jwk(key, "k1")]}, [alg])


ALL_ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384"]
ALL_ALGORITHMS += ["PS512", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
async def test_accepts_a_valid_token_of_each_algorithm(alg: str) -> None:
    """A token signed with each supported algorithm verifies with the matching key."""
    signing_key, keys = _keys_for(alg)
    auth = authenticator([alg], keys)
    identity = await auth.authenticate(mint(claims(), signing_key, alg, kid="k1"), NOW)
    assert identity is not None
    assert identity.subject == "u1"


async def test_accepts_ed448_from_a_jwk() -> None:
    """EdDSA covers Ed448 keys too."""
    key = ed448.Ed448PrivateKey.generate()
    keys = StaticKeys.from_jwks({"keys": [public_jwk(key, "ed448")]}, ["EdDSA"])
    token = mint(claims(), key, "EdDSA", kid="ed448")
    identity = await authenticator(["EdDSA"], keys).authenticate(token, NOW)
    assert identity is not None


async def test_accepts_a_key_from_a_certificate() -> None:
    """A PEM certificate is read for its public key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA_KEY.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(RSA_KEY, hashes.SHA256())
    )
    keys = StaticKeys.from_pem(cert.public_bytes(Encoding.PEM), ["RS256"])
    identity = await authenticator(["RS256"], keys).authenticate(
        mint(claims(), RSA_KEY, "RS256"), NOW
    )
    assert identity is not None


# --- rejections ------------------------------------------------------------------------

HS_REJECTIONS: dict[str, tuple[Callable[[], str], str]] = {
    "alg not allowed": (lambda: mint(claims(), SECRET[:48], "HS384"), "alg HS384 not allowed"),
    "alg unsupported": (lambda: hs(claims(), header={"alg": "HS1"}), "unsupported alg"),
    "alg missing": (lambda: hs(claims(), header={"typ": "JWT"}), "alg missing"),
    "alg not a string": (lambda: hs(claims(), header={"alg": ["HS256"]}), "alg missing"),
    "alg none": (lambda: hs(claims(), header={"alg": "none"}), '"none" refused'),
    "alg None": (lambda: hs(claims(), header={"alg": "None"}), '"none" refused'),
    "alg NONE unsigned": (
        lambda: hs(claims(), header={"alg": "NONE"}).rsplit(".", 1)[0] + ".",
        '"none" refused',
    ),
    "asymmetric token": (
        lambda: mint(claims(), RSA_KEY, "RS256"),
        "asymmetric token for an HMAC authenticator",
    ),
    "crit": (
        lambda: hs(claims(), header={"alg": "HS256", "crit": ["exp"], "exp": 1}),
        "crit header refused",
    ),
    "crit b64": (
        lambda: hs(claims(), header={"alg": "HS256", "crit": ["b64"], "b64": False}),
        "crit header refused",
    ),
    "jku": (
        lambda: hs(claims(), header={"alg": "HS256", "jku": "https://evil.example/k"}),
        "jku header refused",
    ),
    "x5u": (
        lambda: hs(claims(), header={"alg": "HS256", "x5u": "https://evil.example/c"}),
        "x5u header refused",
    ),
    "jwk": (
        lambda: hs(claims(), header={"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}),
        "jwk header refused",
    ),
    "x5c": (lambda: hs(claims(), header={"alg": "HS256", "x5c": ["MIIB"]}), "x5c header refused"),
    "kid not a string": (lambda: hs(claims(), header={"alg": "HS256", "kid": 7}), "kid is not"),
    "payload not base64url": (
        lambda: ".".join([hs(claims()).split(".")[0], "e30*", "AAAA"]),
        "payload is not base64url",
    ),
    "payload padded": (
        lambda: ".".join([hs(claims()).split(".")[0], b64(b"{}") + "==", "AAAA"]),
        "payload is not base64url",
    ),
    "payload impossible length": (
        lambda: ".".join([hs(claims()).split(".")[0], "abcde", "AAAA"]),
        "payload is not base64url",
    ),
    "signature not base64url": (
        lambda: hs(claims()).rsplit(".", 1)[0] + ".a+b/",
        "signature is not base64url",
    ),
    "header not JSON": (lambda: hs(claims(), header=b"{not json"), "header is not JSON"),
    "header not UTF-8": (lambda: hs(claims(), header=b'{"alg":"\xff"}'), "header is not JSON"),
    "header duplicate member": (
        lambda: hs(claims(), header=b'{"alg":"HS256","alg":"HS256"}'),
        "duplicate member name in header",
    ),
    "payload not JSON": (lambda: raw(b"not json"), "payload is not JSON"),
    "payload NaN": (lambda: raw(b'{"sub":"u1","exp":NaN}'), "payload is not JSON"),
    "payload deeply nested": (lambda: raw(b"[" * 2000 + b"]" * 2000), "payload is not JSON"),
    "payload array": (lambda: raw(b"[1]"), "payload is not a JSON object"),
    "payload string": (lambda: raw(b'"u1"'), "payload is not a JSON object"),
    "payload duplicate member": (
        lambda: raw(
            f'{{"iss":"{ISS}","aud":"{AUD}","sub":"u1","sub":"admin","exp":{NOW + 60}}}'.encode()
        ),
        "duplicate member name in payload",
    ),
    "payload nested duplicate": (
        lambda: raw(
            f'{{"iss":"{ISS}","aud":"{AUD}","sub":"u1","exp":{NOW + 60},'
            f'"x":{{"a":1,"a":2}}}}'.encode()
        ),
        "duplicate member name in payload",
    ),
    "too long": (lambda: hs(claims(pad="x" * 9000)), "longer than max_token_bytes"),
    "bad signature": (lambda: mint(claims(), b"w" * 32, "HS256"), "bad signature"),
    "tampered payload": (
        lambda: ".".join(
            [
                hs(claims()).split(".")[0],
                b64(json.dumps(claims(sub="admin")).encode()),
                hs(claims()).split(".")[2],
            ]
        ),
        "bad signature",
    ),
    "signature stripped": (lambda: hs(claims()).rsplit(".", 1)[0] + ".", "signature missing"),
    "exp missing": (lambda: hs(claims(exp=DROP)), "required claim exp missing"),
    "expired": (lambda: hs(claims(exp=NOW - 1)), "token expired"),
    "expires now": (lambda: hs(claims(exp=NOW)), "token expired"),
    "exp bool": (lambda: hs(claims(exp=True)), "exp is not a number"),
    "exp string": (lambda: hs(claims(exp=str(NOW + 60))), "exp is not a number"),
    "exp null": (lambda: hs(claims(exp=None)), "exp is not a number"),
    "exp infinite": (
        lambda: raw(f'{{"iss":"{ISS}","aud":"{AUD}","sub":"u1","exp":1e400}}'.encode()),
        "exp is not a finite number",
    ),
    "exp huge integer": (
        lambda: raw(f'{{"iss":"{ISS}","aud":"{AUD}","sub":"u1","exp":1{"0" * 400}}}'.encode()),
        "exp is not a finite number",
    ),
    "nbf in the future": (lambda: hs(claims(nbf=NOW + 5)), "not yet valid"),
    "nbf bool": (lambda: hs(claims(nbf=False)), "nbf is not a number"),
    "iat in the future": (lambda: hs(claims(iat=NOW + 5)), "issued in the future"),
    "iat string": (lambda: hs(claims(iat="yesterday")), "iat is not a number"),
    "aud other": (lambda: hs(claims(aud="other-api")), "aud does not name this audience"),
    "aud list without ours": (lambda: hs(claims(aud=["a", "b"])), "aud does not name"),
    "aud empty list": (lambda: hs(claims(aud=[])), "aud does not name"),
    "aud missing": (lambda: hs(claims(aud=DROP)), "aud missing"),
    "aud not a string": (lambda: hs(claims(aud=7)), "aud is not a string or a list"),
    "aud list of non-strings": (lambda: hs(claims(aud=[AUD, 7])), "aud is not a string or a list"),
    "sub missing": (lambda: hs(claims(sub=DROP)), "subject claim sub missing"),
    "sub empty": (lambda: hs(claims(sub="")), "sub is not a non-empty string"),
    "sub not a string": (lambda: hs(claims(sub=42)), "sub is not a non-empty string"),
}


@pytest.mark.parametrize("case", list(HS_REJECTIONS))
async def test_rejects(case: str) -> None:
    """Each malformed, forged, expired or mistyped token raises InvalidCredentials with
    a reason that does not quote the token."""
    make, reason = HS_REJECTIONS[case]
    token = make()
    with pytest.raises(InvalidCredentials) as caught:
        await authenticator().authenticate(token, NOW)
    message = str(caught.value)
    assert reason in message
    assert all(part not in message for part in token.split(".") if len(part) > 3)


async def test_hmac_token_made_with_the_public_key_is_rejected() -> None:
    """An HS256 token whose secret is the RSA public key PEM fails on an RS256 authenticator."""
    token = mint(claims(), pem(RSA_KEY), "HS256")
    with pytest.raises(InvalidCredentials, match="HMAC token for an asymmetric authenticator"):
        await rsa_authenticator().authenticate(token, NOW)


async def test_asymmetric_alg_outside_the_allow_list_is_rejected() -> None:
    """A PS256 token is refused by an authenticator that allows RS256 only, same key or not."""
    with pytest.raises(InvalidCredentials, match="alg PS256 not allowed"):
        await rsa_authenticator().authenticate(mint(claims(), RSA_KEY, "PS256"), NOW)


async def test_token_signed_by_another_rsa_key_is_rejected() -> None:
    """A signature by a key other than the configured one does not verify."""
    with pytest.raises(InvalidCredentials, match="bad signature"):
        await rsa_authenticator().authenticate(mint(claims(), OTHER_RSA_KEY, "RS256"), NOW)


def _jwks_keys(*jwks: dict[str, Any]) -> StaticKeys:
    return StaticKeys.from_jwks({"keys": list(jwks)}, ["RS256", "ES256"])


@pytest.mark.parametrize(
    ("keys", "kid"),
    [
        pytest.param(
            lambda: _jwks_keys(public_jwk(EC_KEYS["ES256"], "k1"), public_jwk(RSA_KEY, "k2")),
            "k1",
            id="ES256 JWK never verifies RS256",
        ),
        pytest.param(
            lambda: _jwks_keys(public_jwk(RSA_KEY, "k1", use="enc"), public_jwk(RSA_KEY, "k2")),
            "k1",
            id="use enc",
        ),
        pytest.param(
            lambda: _jwks_keys(public_jwk(RSA_KEY, "k1", alg="RS512"), public_jwk(RSA_KEY, "k2")),
            "k1",
            id="JWK alg differs",
        ),
        pytest.param(
            lambda: _jwks_keys(
                public_jwk(RSA_KEY, "k1", key_ops=["encrypt"]), public_jwk(RSA_KEY, "k2")
            ),
            "k1",
            id="key_ops without verify",
        ),
        pytest.param(
            lambda: _jwks_keys(public_jwk(RSA_KEY, "k1"), public_jwk(RSA_KEY, "k2")),
            "k3",
            id="unknown kid",
        ),
        pytest.param(
            lambda: _jwks_keys(public_jwk(RSA_KEY, "k1"), public_jwk(RSA_KEY, "k2")),
            None,
            id="no kid, several keys",
        ),
    ],
)
async def test_key_binding(keys: Callable[[], StaticKeys], kid: str | None) -> None:
    """A key is used only for its own family, curve, use, alg and kid."""
    auth = authenticator(["RS256", "ES256"], keys())
    with pytest.raises(InvalidCredentials, match="no key matches"):
        await auth.authenticate(mint(claims(), RSA_KEY, "RS256", kid=kid), NOW)


async def test_kid_selects_among_several_keys() -> None:
    """With several keys, the token's kid picks the one that verifies it."""
    keys = _jwks_keys(public_jwk(OTHER_RSA_KEY, "k1"), public_jwk(RSA_KEY, "k2"))
    identity = await authenticator(["RS256"], keys).authenticate(
        mint(claims(), RSA_KEY, "RS256", kid="k2"), NOW
    )
    assert identity is not None
    assert identity.key_id == "k2"


# --- routing: not this authenticator's credential -------------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("ak_live_0123456789abcdef", id="opaque key"),
        pytest.param("a.b", id="two parts"),
        pytest.param(hs(claims()) + ".e30.e30", id="five-part JWE shape"),
        pytest.param(hs(claims(iss="https://other.example")), id="other issuer"),
        pytest.param(hs(claims(iss=DROP)), id="no issuer"),
        pytest.param(hs(claims(iss=["https://issuer.example"])), id="issuer not a string"),
        pytest.param(mint(claims(iss="https://other.example"), RSA_KEY, "RS256"), id="other IdP"),
    ],
)
async def test_not_mine(credential: str) -> None:
    """Credentials of another shape or another issuer return None, so the next
    authenticator may take them."""
    assert await authenticator().authenticate(credential, NOW) is None


async def test_without_issuer_any_string_issuer_passes_and_other_types_fail() -> None:
    """With issuer=None the iss claim is only type-checked."""
    auth = authenticator(issuer=None)
    assert await auth.authenticate(hs(claims(iss="https://anyone.example")), NOW) is not None
    with pytest.raises(InvalidCredentials, match="iss is not a string"):
        await auth.authenticate(hs(claims(iss=5)), NOW)


async def test_without_audience_aud_is_optional_but_typed() -> None:
    """With audience=None a token without aud passes, a mistyped aud still fails."""
    auth = authenticator(audience=None)
    assert await auth.authenticate(hs(claims(aud=DROP)), NOW) is not None
    with pytest.raises(InvalidCredentials, match="aud is not a string"):
        await auth.authenticate(hs(claims(aud={"a": 1})), NOW)


async def test_audience_given_as_one_string() -> None:
    """audience="edge-api" means that one audience, not its characters."""
    auth = authenticator(audience=AUD)
    assert await auth.authenticate(hs(claims(aud=[AUD, "x"])), NOW) is not None
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(hs(claims(aud="e")), NOW)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": NOW - 10}, id="exp 10 s ago"),
        pytest.param({"nbf": NOW + 10}, id="nbf in 10 s"),
        pytest.param({"iat": NOW + 10}, id="iat in 10 s"),
    ],
)
async def test_leeway(changes: dict[str, float]) -> None:
    """Time claims within the leeway pass; the same token fails without leeway."""
    token = hs(claims(**changes))
    assert await authenticator(leeway=30).authenticate(token, NOW) is not None
    with pytest.raises(InvalidCredentials):
        await authenticator().authenticate(token, NOW)


async def test_required_claims() -> None:
    """Claims named in required_claims must be present; with none, exp is optional."""
    with pytest.raises(InvalidCredentials, match="required claim jti missing"):
        await authenticator(required_claims=("exp", "jti")).authenticate(hs(claims()), NOW)
    identity = await authenticator(required_claims=()).authenticate(hs(claims(exp=DROP)), NOW)
    assert identity is not None
    assert identity.expires_at is None


# --- claim mapping -------------------------------------------------------------------


async def test_identity_fields() -> None:
    """The identity carries subject, kid, jti, iat, exp and the read-only claims."""
    token = hs(claims(jti="t-1", scope="read write"), kid="k9")
    identity = await authenticator().authenticate(token, NOW)
    assert isinstance(identity, Identity)
    assert (identity.subject, identity.authenticator, identity.credential_type) == (
        "u1",
        "session",
        "jwt",
    )
    assert (identity.key_id, identity.token_id) == ("k9", "t-1")
    assert (identity.issued_at, identity.expires_at) == (NOW - 10, NOW + 300)
    assert identity.scopes == ("read", "write")
    assert identity.roles == ()
    assert identity.claims["iss"] == ISS
    with pytest.raises(TypeError):
        identity.claims["sub"] = "admin"  # type: ignore[index]


async def test_non_string_jti_is_not_a_token_id() -> None:
    """A numeric jti is kept in the claims but not used as token_id."""
    identity = await authenticator().authenticate(hs(claims(jti=5)), NOW)
    assert identity is not None
    assert identity.token_id is None


@pytest.mark.parametrize(
    ("roles_claim", "extra", "roles"),
    [
        pytest.param("role", {"role": "admin"}, ("admin",), id="one string"),
        pytest.param("roles", {"roles": ["admin", "ops"]}, ("admin", "ops"), id="list"),
        pytest.param(
            "https://example.com/roles",
            {"https://example.com/roles": ["admin"]},
            ("admin",),
            id="URL-named claim",
        ),
        pytest.param(
            ("realm_access", "roles"),
            {"realm_access": {"roles": ["admin", "user"]}},
            ("admin", "user"),
            id="nested path",
        ),
        pytest.param(("realm_access", "roles"), {"realm_access": {}}, (), id="nested absent"),
        pytest.param("roles", {}, (), id="absent"),
        pytest.param(None, {"roles": ["admin"]}, (), id="no roles claim configured"),
    ],
)
async def test_roles_mapping(
    roles_claim: str | tuple[str, ...] | None, extra: dict[str, Any], roles: tuple[str, ...]
) -> None:
    """Roles come from one top-level claim (whatever its name) or a nested path."""
    identity = await authenticator(roles_claim=roles_claim).authenticate(hs(claims(**extra)), NOW)
    assert identity is not None
    assert identity.roles == roles


async def test_dotted_claim_name_is_not_a_path() -> None:
    """roles_claim="realm_access.roles" names a top-level claim, it does not descend."""
    auth = authenticator(roles_claim="realm_access.roles")
    token = hs(claims(**{"realm_access": {"roles": ["admin"]}, "realm_access.roles": "viewer"}))
    identity = await auth.authenticate(token, NOW)
    assert identity is not None
    assert identity.roles == ("viewer",)


@pytest.mark.parametrize(
    ("roles_claim", "extra"),
    [
        pytest.param("roles", {"roles": {"admin": True}}, id="object"),
        pytest.param("roles", {"roles": ["admin", 1]}, id="list with a number"),
        pytest.param("roles", {"roles": None}, id="null"),
        pytest.param(("realm_access", "roles"), {"realm_access": "admin"}, id="path via string"),
    ],
)
async def test_roles_of_the_wrong_type_are_rejected(
    roles_claim: str | tuple[str, ...], extra: dict[str, Any]
) -> None:
    """A roles claim that is not a string or list of strings is an invalid token."""
    with pytest.raises(InvalidCredentials, match="roles claim"):
        await authenticator(roles_claim=roles_claim).authenticate(hs(claims(**extra)), NOW)


@pytest.mark.parametrize(
    ("scopes_claim", "extra", "scopes"),
    [
        pytest.param("scope", {"scope": "a b  c"}, ("a", "b", "c"), id="space-separated"),
        pytest.param("scp", {"scp": ["a", "b"]}, ("a", "b"), id="list"),
        pytest.param(None, {"scope": "a"}, (), id="none configured"),
    ],
)
async def test_scopes_mapping(
    scopes_claim: str | None, extra: dict[str, Any], scopes: tuple[str, ...]
) -> None:
    """Scopes come from a space-separated string or a list."""
    identity = await authenticator(scopes_claim=scopes_claim).authenticate(hs(claims(**extra)), NOW)
    assert identity is not None
    assert identity.scopes == scopes


async def test_scopes_of_the_wrong_type_are_rejected() -> None:
    """A numeric scope claim is an invalid token."""
    with pytest.raises(InvalidCredentials, match="scopes claim"):
        await authenticator().authenticate(hs(claims(scope=3)), NOW)


async def test_subject_from_another_claim() -> None:
    """subject_claim picks the claim that names the caller."""
    auth = authenticator(subject_claim="email")
    identity = await auth.authenticate(hs(claims(email="u1@example.com")), NOW)
    assert identity is not None
    assert identity.subject == "u1@example.com"
    with pytest.raises(InvalidCredentials, match="subject claim email missing"):
        await auth.authenticate(hs(claims()), NOW)


# --- configuration errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        pytest.param(["HS256", "RS256"], "cannot be mixed", id="HMAC and asymmetric"),
        pytest.param(["none"], '"none" is never accepted', id="none"),
        pytest.param(["RS256", "NONE"], '"none" is never accepted', id="NONE"),
        pytest.param(["ES256K"], "unsupported algorithm", id="unsupported"),
        pytest.param([], "must not be empty", id="empty"),
        pytest.param("RS256", "not one string", id="a string"),
    ],
)
def test_algorithm_allow_list_is_validated(algorithms: Any, message: str) -> None:
    """Bad allow-lists are refused by check_algorithms and by the authenticator."""
    with pytest.raises(ValueError, match=message):
        check_algorithms(algorithms)
    with pytest.raises(ValueError, match=message):
        authenticator(algorithms, keys=StaticKeys.from_secret(HS_SECRET, ["HS256"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"audience": []}, "audience must not be empty", id="empty audience"),
        pytest.param({"leeway": -1}, "leeway", id="negative leeway"),
        pytest.param({"required_claims": "exp"}, "not one string", id="required claims string"),
        pytest.param({"roles_claim": ()}, "claim path", id="empty roles path"),
        pytest.param({"max_token_bytes": 0}, "max_token_bytes", id="no room for a token"),
    ],
)
def test_authenticator_options_are_validated(options: dict[str, Any], message: str) -> None:
    """Impossible authenticator options raise ValueError at load."""
    with pytest.raises(ValueError, match=message):
        authenticator(**options)


def _private_pem(key: Any) -> Any:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: StaticKeys.from_secret(b"s" * 31, ["HS256"]), "at least 32", id="31"),
        pytest.param(
            lambda: StaticKeys.from_secret(b"s" * 47, ["HS256", "HS384"]),
            "HS384 needs at least 48",
            id="strictest algorithm",
        ),
        pytest.param(
            lambda: StaticKeys.from_secret(b"s" * 63, ["HS512"]), "at least 64", id="HS512"
        ),
        pytest.param(
            lambda: StaticKeys.from_secret(pem(RSA_KEY), ["HS256"]),
            "looks like a public key",
            id="PEM as secret",
        ),
        pytest.param(
            lambda: StaticKeys.from_secret(HS_SECRET, ["RS256"]), "HS512 only", id="secret for RS"
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(_private_pem(RSA_KEY), ["RS256"]),
            "private key was given",
            id="private key",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(pem(RSA_KEY), ["ES256"]),
            "RSA key fits none",
            id="RSA for ES256",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(pem(EC_KEYS["ES256"]), ["ES384"]),
            "curve secp256r1 fits none",
            id="P-256 for ES384",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(pem(ED_KEY), ["RS256"]),
            "Ed25519 key fits none",
            id="Ed25519 for RS256",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(
                pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), ["RS256"]
            ),
            "1024 bits",
            id="small RSA key",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n", ["RS256"]),
            "not a PEM public key",
            id="garbage",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n", ["RS256"]),
            "not a valid PEM certificate",
            id="broken certificate",
        ),
        pytest.param(
            lambda: StaticKeys.from_pem(pem(RSA_KEY), ["HS256"]), "needs a secret", id="PEM for HS"
        ),
    ],
)
def test_static_keys_are_validated(make: Callable[[], StaticKeys], message: str) -> None:
    """Weak, private, misfitting or unreadable keys raise ValueError at load."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param({}, '"keys" list', id="no keys"),
        pytest.param({"keys": {"k1": {}}}, '"keys" list', id="keys not a list"),
        pytest.param({"keys": ["x"]}, "keys\\[0\\]: not a JSON object", id="key not an object"),
        pytest.param(
            {"keys": [public_jwk(RSA_KEY, "k1", d="AAAA")]}, "private key material", id="private"
        ),
        pytest.param(
            {"keys": [public_jwk(RSA_KEY, "k1", n=5)]}, "needs string members", id="n not a string"
        ),
        pytest.param(
            {"keys": [public_jwk(EC_KEYS["ES256"], "k1", x=b64(b"\x01" * 32))]},
            "not a valid EC key",
            id="EC point off the curve",
        ),
        pytest.param({"keys": [public_jwk(RSA_KEY, 5)]}, "kid is not a string", id="kid type"),
        pytest.param(
            {"keys": [public_jwk(EC_KEYS["ES384"], "k1")]}, "no key in the JWK Set", id="no fit"
        ),
    ],
)
def test_jwks_documents_are_validated(document: dict[str, Any], message: str) -> None:
    """A bad JWK Set file raises ValueError naming the key, never its material."""
    with pytest.raises(ValueError, match=message) as caught:
        StaticKeys.from_jwks(document, ["RS256", "ES256"])
    assert "AAAA" not in str(caught.value)


async def test_hmac_keys_from_a_jwks_file() -> None:
    """An oct JWK in a JWK Set file verifies HS tokens, with the same length floor."""
    keys = StaticKeys.from_jwks(
        {"keys": [{"kty": "oct", "kid": "s1", "k": b64(SECRET)}]}, ["HS512"]
    )
    token = mint(claims(), SECRET, "HS512", kid="s1")
    assert await authenticator(["HS512"], keys).authenticate(token, NOW) is not None
    with pytest.raises(ValueError, match="at least 64"):
        StaticKeys.from_jwks({"keys": [{"kty": "oct", "k": b64(b"s" * 40)}]}, ["HS512"])


def test_key_types_without_a_signature_algorithm_are_refused() -> None:
    """An X25519 key (key agreement, not signatures) is refused."""
    key = x25519.X25519PrivateKey.generate()
    with pytest.raises(ValueError, match="not an RSA, EC, Ed25519 or Ed448 public key"):
        StaticKeys.from_pem(pem(key), ["EdDSA"])


async def test_unknown_key_types_in_a_jwks_are_ignored() -> None:
    """A JWK of a type this version does not know is skipped, the others still load."""
    document = {"keys": [{"kty": "PQC", "kid": "q1"}, public_jwk(RSA_KEY, "k1")]}
    keys = StaticKeys.from_jwks(document, ["RS256"])
    token = mint(claims(), RSA_KEY, "RS256", kid="k1")
    assert await authenticator(["RS256"], keys).authenticate(token, NOW) is not None


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("signature", ["AA", "A" * 700], ids=["short", "long"])
async def test_signature_of_the_wrong_length_is_a_bad_signature(alg: str, signature: str) -> None:
    """A truncated or padded signature fails verification, it does not crash it."""
    signing_key, keys = _keys_for(alg)
    token = mint(claims(), signing_key, alg).rsplit(".", 1)[0] + "." + signature
    with pytest.raises(InvalidCredentials, match="bad signature"):
        await authenticator([alg], keys).authenticate(token, NOW)
