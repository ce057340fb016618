"""The JWT authenticator: strict compact-JWS parsing, signature and claim checks.

A token is parsed once, here (RFC 7515 §5.2, RFC 7519 §7.2): header and payload
must be unpadded base64url of a JSON object without duplicate member names.
PyJWT's algorithm objects do the cryptography over the signing input, with keys
prepared once at load; every claim is checked here, so the rules of RFC 8725
(JWT best current practices) can be read in one place:

- the algorithm comes from an explicit allow-list that never mixes HMAC with
  asymmetric algorithms (RFC 8725 §2.1, §3.1: key confusion); "none" never passes;
- a key verifies only the algorithms of its family and curve, and only those its
  JWK ``alg``, ``use`` and ``key_ops`` allow (RFC 7517 §4);
- ``crit`` is refused, since no extension is understood (RFC 7515 §4.1.11), and
  so are ``jku``, ``x5u``, ``jwk`` and ``x5c``: keys come from the policy only;
- ``exp``, ``nbf`` and ``iat`` are finite numbers checked with leeway, ``iss``
  and ``aud`` are compared exactly (RFC 8725 §3.8, §3.9).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    HMACAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)
from jwt.exceptions import InvalidKeyError

from ..errors import InvalidCredentials
from ..model import Identity
from .base import CredentialSource, looks_like_jwt
from .cache import TokenCache

__all__ = [
    "HMAC_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "JwtAuthenticator",
    "KeyProvider",
    "KeySet",
    "StaticKeys",
    "VerifyKey",
    "check_algorithms",
    "parse_jwks",
]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
SUPPORTED_ALGORITHMS = (
    HMAC_ALGORITHMS | _RSA_ALGORITHMS | frozenset(_EC_ALGORITHMS.values()) | {"EdDSA"}
)

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# RFC 7518 §3.3 asks for 2048 bits at least.
_MIN_RSA_BITS = 2048
_VERIFIERS: dict[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in SUPPORTED_ALGORITHMS
}
# The members a public JWK needs, per key type (RFC 7518 §6); nothing else is read.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x"), "oct": ("k",)}
_JWK_LOADERS = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
    "oct": HMACAlgorithm.from_jwk,
}
# Headers that would let the token choose its own key (RFC 8725 §3.10): never trusted.
_REFUSED_HEADERS = ("jku", "x5u", "jwk", "x5c")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_PUBLIC_KEY_TYPES = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)
_PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey
_Key = bytes | _PublicKey


def check_algorithms(algorithms: Sequence[str]) -> frozenset[str]:
    """Validate an algorithm allow-list; raises ValueError with what is wrong.

    Only supported names pass, never "none", never HMAC mixed with asymmetric ones.

    >>> sorted(check_algorithms(["RS256", "ES256"]))
    ['ES256', 'RS256']
    """
    if isinstance(algorithms, str):
        raise ValueError("algorithms must be a list of names, not one string")
    allowed = frozenset(algorithms)
    if not allowed:
        raise ValueError("algorithms must not be empty")
    for name in sorted(allowed):
        if name.lower() == "none":
            raise ValueError('alg "none" is never accepted')
        if name not in SUPPORTED_ALGORITHMS:
            supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
            raise ValueError(f"unsupported algorithm {name!r}; expected some of {supported}")
    if allowed & HMAC_ALGORITHMS and allowed - HMAC_ALGORITHMS:
        raise ValueError("HMAC (HS*) and asymmetric algorithms cannot be mixed in one allow-list")
    return allowed


@dataclass(frozen=True, slots=True, eq=False)
class VerifyKey:
    """A verification key bound to the algorithms it may verify.

    ``tag`` identifies the kid, the algorithms and the key material; the token
    cache keeps an entry only while its tag is in the current key set.
    """

    kid: str | None
    algorithms: frozenset[str]
    key: Any
    tag: tuple[str | None, frozenset[str], bytes]


class KeySet:
    """An immutable set of verification keys, indexed by (kid, alg) once."""

    def __init__(self, keys: Iterable[VerifyKey]) -> None:
        self.keys = tuple(keys)
        self.tags = frozenset(key.tag for key in self.keys)
        self._by_kid: dict[tuple[str, str], VerifyKey] = {}
        by_alg: dict[str, list[VerifyKey]] = {}
        without_kid: dict[str, list[VerifyKey]] = {}
        for key in self.keys:
            for alg in key.algorithms:
                by_alg.setdefault(alg, []).append(key)
                if key.kid is None:
                    without_kid.setdefault(alg, []).append(key)
                else:
                    self._by_kid.setdefault((key.kid, alg), key)
        self._only = {alg: keys[0] for alg, keys in by_alg.items() if len(keys) == 1}
        self._only_without_kid = {
            alg: keys[0] for alg, keys in without_kid.items() if len(keys) == 1
        }

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, kid: str | None, alg: str) -> VerifyKey | None:
        """The key for a token's ``kid`` and ``alg``, or None.

        A token with a ``kid`` gets the key with that kid, else the one key without
        a kid (a configured secret or PEM key). A token without ``kid`` gets the
        one key for ``alg``; when there are several it matches none.
        """
        if kid is None:
            return self._only.get(alg)
        return self._by_kid.get((kid, alg)) or self._only_without_kid.get(alg)


def parse_jwks(document: object, algorithms: frozenset[str]) -> tuple[list[VerifyKey], list[str]]:
    """Build the keys of a JWK Set (RFC 7517 §5) that fit ``algorithms``.

    Returns the keys and the problems found (broken or private keys, by index,
    never with key material). Keys for other algorithms, or whose ``use`` or
    ``key_ops`` is not signature verification, are left out silently. Raises
    ValueError when ``document`` is not an object with a ``keys`` list.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWK Set must be a JSON object with a "keys" list')
    keys: list[VerifyKey] = []
    problems: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        try:
            key = _key_from_jwk(jwk, algorithms)
        except ValueError as exc:
            problems.append(f"keys[{index}]: {exc}")
            continue
        if key is not None:
            keys.append(key)
    return keys, problems


class KeyProvider(Protocol):
    """Where a :class:`JwtAuthenticator` gets its verification keys."""

    async def key_for(self, kid: str | None, alg: str, now: float) -> tuple[Any, object]:
        """The prepared key for ``alg`` and its tag. Raises InvalidCredentials
        when no key matches, AuthUnavailable when keys cannot be obtained."""
        ...

    def key_valid(self, tag: object) -> bool:
        """Whether the key with this tag is still in the current key set."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds."""
        ...

    # Optional: a provider whose keys never leave their set says so with a
    # class attribute ``fixed = True``; its cached tokens are not checked
    # against the key set on every hit. Without it, they are.


class StaticKeys:
    """Keys fixed by the policy: a ``secret``, a ``public_key`` or a ``jwks_file``.

    >>> keys = StaticKeys.from_secret(b"0123456789abcdef0123456789abcdef", ["HS256"])
    >>> len(keys.key_set)
    1
    """

    fixed = True
    """The keys never leave their set (see :class:`KeyProvider`)."""

    def __init__(self, key_set: KeySet) -> None:
        self.key_set = key_set

    @classmethod
    def from_secret(cls, secret: bytes, algorithms: Sequence[str]) -> StaticKeys:
        """An HMAC secret; ValueError when it is shorter than the strictest of
        ``algorithms`` needs (32, 48, 64 bytes for HS256, HS384, HS512) or looks
        like a public key, certificate or JWK (key confusion)."""
        allowed = check_algorithms(algorithms)
        if not allowed <= HMAC_ALGORITHMS:
            raise ValueError("a secret verifies HS256, HS384 or HS512 only")
        try:
            _VERIFIERS["HS256"].prepare_key(secret)
        except InvalidKeyError:
            raise ValueError(
                "the secret looks like a public key, certificate or JWK; "
                "an HMAC secret must be random bytes"
            ) from None
        return cls(KeySet([_verify_key(bytes(secret), None, allowed)]))

    @classmethod
    def from_pem(cls, pem: bytes, algorithms: Sequence[str]) -> StaticKeys:
        """A PEM public key (or a certificate holding one) that fits ``algorithms``:
        RSA for RS*/PS*, EC P-256/P-384/P-521 for ES256/384/512, Ed25519 or Ed448
        for EdDSA. A private key is refused: configure its public half."""
        allowed = check_algorithms(algorithms)
        if allowed <= HMAC_ALGORITHMS:
            raise ValueError("a public key verifies asymmetric algorithms; HS* needs a secret")
        key = _load_pem_public_key(pem)
        fitting = _key_algorithms(key) & allowed
        if not fitting:
            raise ValueError(
                f"the {_describe(key)} fits none of the algorithms {', '.join(sorted(allowed))}"
            )
        return cls(KeySet([_verify_key(key, None, fitting)]))

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any], algorithms: Sequence[str]) -> StaticKeys:
        """A JWK Set document; ValueError when it is malformed, holds a broken or
        private key, or has no key for ``algorithms``."""
        allowed = check_algorithms(algorithms)
        keys, problems = parse_jwks(document, allowed)
        if problems:
            raise ValueError("; ".join(problems))
        if not keys:
            raise ValueError(f"no key in the JWK Set fits {', '.join(sorted(allowed))}")
        return cls(KeySet(keys))

    async def key_for(self, kid: str | None, alg: str, now: float) -> tuple[Any, object]:
        """The key for ``kid`` and ``alg``; InvalidCredentials when none matches."""
        found = self.key_set.find(kid, alg)
        if found is None:
            raise InvalidCredentials("no key matches the token's kid and alg")
        return found.key, found.tag

    def key_valid(self, tag: object) -> bool:
        """Static keys never rotate: true for every tag this provider handed out."""
        return tag in self.key_set.tags

    async def aclose(self) -> None:
        """Nothing to release."""


class JwtAuthenticator:
    """Verifies JWTs in compact JWS form (RFC 7515, RFC 7519) and maps claims to an
    :class:`~edgeauth.model.Identity`.

    ``authenticate`` returns None for a credential that is not a compact JWS, or
    whose unverified ``iss`` is not ``issuer`` (another authenticator's token),
    and raises InvalidCredentials for anything else that is wrong.

    >>> import asyncio
    >>> auth = JwtAuthenticator(
    ...     "session", sources=(CredentialSource("cookie", "session"),),
    ...     algorithms=["HS256"], keys=StaticKeys.from_secret(b"s" * 32, ["HS256"]),
    ...     issuer="https://issuer.example", audience=["edge-api"])
    >>> asyncio.run(auth.authenticate("not a token", now=0.0)) is None
    True
    """

    def __init__(
        self,
        id: str,
        *,
        sources: tuple[CredentialSource, ...],
        algorithms: Sequence[str],
        keys: KeyProvider,
        issuer: str | None,
        audience: Sequence[str] | None,
        leeway: float = 0.0,
        required_claims: Sequence[str] = ("exp",),
        subject_claim: str = "sub",
        roles_claim: str | tuple[str, ...] | None = None,
        scopes_claim: str | tuple[str, ...] | None = "scope",
        forward_credential: bool = True,
        cache: TokenCache | None = None,
        max_token_bytes: int = 8192,
    ) -> None:
        self.id = id
        self.sources = tuple(sources)
        self.forward_credential = forward_credential
        self._algorithms = check_algorithms(algorithms)
        self._hmac = self._algorithms <= HMAC_ALGORITHMS
        self._keys = keys
        # Checked on every cache hit, unless the provider's keys never change.
        self._key_valid = None if getattr(keys, "fixed", False) else keys.key_valid
        self._issuer = issuer
        if isinstance(audience, str):
            audience = (audience,)
        self._audience = None if audience is None else frozenset(audience)
        if self._audience is not None and not self._audience:
            raise ValueError("audience must not be empty (None accepts any audience)")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self._leeway = float(leeway)
        if isinstance(required_claims, str):
            raise ValueError("required_claims must be a list of names, not one string")
        self._required = tuple(required_claims)
        self._subject_claim = subject_claim
        self._roles_path = _claim_path(roles_claim)
        self._scopes_path = _claim_path(scopes_claim)
        self._cache = cache
        if max_token_bytes < 1:
            raise ValueError("max_token_bytes must be positive")
        self._max_token_bytes = max_token_bytes

    def verified(self, credential: str, now: float) -> Identity | None:
        """The cached identity of ``credential`` if the verified-token cache holds it."""
        if self._cache is None or len(credential) > self._max_token_bytes:
            return None
        return self._cache.get(self.id, credential, now)

    async def authenticate(self, credential: str, now: float) -> Identity | None:
        """Verify ``credential`` at ``now`` (seconds since the epoch)."""
        # Tokens are ASCII, so characters count bytes; anything else fails base64url.
        oversized = len(credential) > self._max_token_bytes
        if self._cache is not None and not oversized:
            hit = self._cache.get(self.id, credential, now)
            if hit is not None:
                return hit
        if not looks_like_jwt(credential):
            return None
        if oversized:
            _refuse("token longer than max_token_bytes")
        header_b64, payload_b64, signature_b64 = credential.split(".")
        header = _json_object(_b64decode(header_b64, "header"), "header")
        payload = _json_object(_b64decode(payload_b64, "payload"), "payload")
        if self._issuer is not None and payload.get("iss") != self._issuer:
            return None  # another issuer's token: the next authenticator may take it
        alg, kid = self._check_header(header)
        signature = _b64decode(signature_b64, "signature")
        if not signature:
            _refuse("signature missing")
        key, tag = await self._keys.key_for(kid, alg, now)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not _VERIFIERS[alg].verify(signing_input, key, signature):
            _refuse("bad signature")
        identity = self._identity(payload, kid, now)
        if self._cache is not None and identity.expires_at is not None:
            self._cache.put(
                self.id,
                credential,
                identity,
                expires_at=identity.expires_at + self._leeway,
                key_tag=tag,
                key_valid=self._key_valid,
            )
        return identity

    async def aclose(self) -> None:
        """Close the key provider (a JWKS client's HTTP session)."""
        await self._keys.aclose()

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str | None]:
        alg = header.get("alg")
        if not isinstance(alg, str):
            _refuse("alg missing or not a string")
        if alg.lower() == "none":
            _refuse('alg "none" refused')
        if alg not in self._algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                _refuse("unsupported alg")
            if self._hmac != (alg in HMAC_ALGORITHMS):
                kinds = ("asymmetric", "HMAC") if self._hmac else ("HMAC", "asymmetric")
                _refuse(f"{kinds[0]} token for an {kinds[1]} authenticator")
            _refuse(f"alg {alg} not allowed")
        if "crit" in header:
            _refuse("crit header refused: no extension is supported")
        for name in _REFUSED_HEADERS:
            if name in header:
                _refuse(f"{name} header refused")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            _refuse("kid is not a string")
        return alg, kid

    def _identity(self, payload: dict[str, Any], kid: str | None, now: float) -> Identity:
        for name in self._required:
            if name not in payload:
                _refuse(f"required claim {name} missing")
        exp = _numeric_date(payload, "exp")
        nbf = _numeric_date(payload, "nbf")
        iat = _numeric_date(payload, "iat")
        # RFC 7519 §4.1.4: the token is refused at and after exp.
        if exp is not None and now >= exp + self._leeway:
            _refuse("token expired")
        if nbf is not None and now + self._leeway < nbf:
            _refuse("token not yet valid (nbf)")
        if iat is not None and now + self._leeway < iat:
            _refuse("token issued in the future (iat)")
        if "iss" in payload and not isinstance(payload["iss"], str):
            _refuse("iss is not a string")
        self._check_audience(payload)
        if "sub" in payload and not (isinstance(payload["sub"], str) and payload["sub"]):
            _refuse("sub is not a non-empty string")
        subject = payload.get(self._subject_claim)
        if not isinstance(subject, str) or not subject:
            _refuse(f"subject claim {self._subject_claim} missing or not a non-empty string")
        jti = payload.get("jti")
        return Identity(
            subject=subject,
            roles=_strings(payload, self._roles_path, "roles", split=False),
            scopes=_strings(payload, self._scopes_path, "scopes", split=True),
            claims=MappingProxyType(payload),
            authenticator=self.id,
            credential_type="jwt",
            key_id=kid,
            token_id=jti if isinstance(jti, str) else None,
            issued_at=iat,
            expires_at=exp,
        )

    def _check_audience(self, payload: dict[str, Any]) -> None:
        if "aud" not in payload:
            if self._audience is not None:
                _refuse("aud missing")
            return
        aud = payload["aud"]
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            _refuse("aud is not a string or a list of strings")
        # RFC 7519 §4.1.3: one of the token's audiences must be ours.
        if self._audience is not None and self._audience.isdisjoint(values):
            _refuse("aud does not name this audience")


def _refuse(reason: str) -> NoReturn:
    raise InvalidCredentials(reason)


def _b64decode(part: str, what: str) -> bytes:
    # RFC 7515 §2: base64url without padding; the stdlib decoder alone would skip
    # characters outside the alphabet.
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        _refuse(f"{what} is not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class _DuplicateMember(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2 step 4 and RFC 7519 §4: duplicate names are refused, since
    # parsers disagree on which one wins.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except _DuplicateMember:
        _refuse(f"duplicate member name in {what}")
    except (ValueError, RecursionError):
        _refuse(f"{what} is not JSON")
    if not isinstance(value, dict):
        _refuse(f"{what} is not a JSON object")
    return value


def _numeric_date(payload: dict[str, Any], name: str) -> float | None:
    if name not in payload:
        return None
    value = payload[name]
    # bool is an int in Python, but `true` is no date (RFC 7519 §2 NumericDate).
    if isinstance(value, bool) or not isinstance(value, int | float):
        _refuse(f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        _refuse(f"{name} is not a finite number")
    return number


def _claim_path(claim: str | tuple[str, ...] | None) -> tuple[str, ...]:
    # A string names one top-level claim, even "https://example.com/roles"; a
    # tuple is a path into nested objects.
    if claim is None:
        return ()
    path = (claim,) if isinstance(claim, str) else tuple(claim)
    if not path or not all(isinstance(name, str) and name for name in path):
        raise ValueError("a claim path must be a non-empty string or tuple of strings")
    return path


def _strings(
    payload: dict[str, Any], path: tuple[str, ...], what: str, *, split: bool
) -> tuple[str, ...]:
    value: Any = payload
    for name in path:
        if not isinstance(value, dict):
            _refuse(f"{what} claim path crosses a non-object")
        if name not in value:
            return ()
        value = value[name]
    if not path:
        return ()
    if isinstance(value, str):
        return tuple(value.split()) if split else (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    _refuse(f"{what} claim is not a string or a list of strings")


def _key_algorithms(key: _Key) -> frozenset[str]:
    """The algorithms a key can verify by its type and curve (RFC 7518 §3)."""
    if isinstance(key, bytes):
        return HMAC_ALGORITHMS
    if isinstance(key, RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(_EC_CURVE_NAMES.get(key.curve.name, ""))
        return frozenset({alg}) if alg else frozenset()
    return frozenset({"EdDSA"})


def _describe(key: _PublicKey) -> str:
    if isinstance(key, EllipticCurvePublicKey):
        return f"EC key on curve {key.curve.name}"
    return "RSA key" if isinstance(key, RSAPublicKey) else f"{type(key).__name__[:-9]} key"


def _verify_key(key: _Key, kid: str | None, algorithms: frozenset[str]) -> VerifyKey:
    """Bind ``key`` to ``algorithms`` (already fitted to it); ValueError if too weak."""
    if isinstance(key, bytes):
        need = max(_HMAC_MIN_BYTES[alg] for alg in algorithms)
        if len(key) < need:
            strictest = max(algorithms, key=_HMAC_MIN_BYTES.__getitem__)
            raise ValueError(f"an HMAC secret for {strictest} needs at least {need} bytes")
        material = key
    else:
        if isinstance(key, RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {_MIN_RSA_BITS} needed")
        material = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    tag = (kid, algorithms, hashlib.sha256(material).digest())
    return VerifyKey(kid, algorithms, key, tag)


def _load_pem_public_key(pem: bytes) -> _PublicKey:
    key: object
    try:
        key = load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        key = _public_key_of_certificate(pem)
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise ValueError("not an RSA, EC, Ed25519 or Ed448 public key")
    return key


def _public_key_of_certificate(pem: bytes) -> object:
    if b"-----BEGIN CERTIFICATE-----" in pem:
        try:
            return x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise ValueError("not a valid PEM certificate") from None
    try:
        load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    raise ValueError("a private key was given; configure its public half (openssl pkey -pubout)")


def _jwk_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return _RSA_ALGORITHMS
    if kty == "EC" and crv in _EC_ALGORITHMS:
        return frozenset({_EC_ALGORITHMS[crv]})
    if kty == "OKP" and crv in ("Ed25519", "Ed448"):
        return frozenset({"EdDSA"})
    if kty == "oct":
        return HMAC_ALGORITHMS
    return frozenset()


def _key_from_jwk(jwk: object, allowed: frozenset[str]) -> VerifyKey | None:
    """The key a JWK describes, bound to its algorithms; None when it is not for
    signature verification with ``allowed``; ValueError when it is broken."""
    if not isinstance(jwk, Mapping):
        raise ValueError("not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    # RFC 7517 §4.2, §4.3: a key for encryption, or not for "verify", is not ours.
    if jwk.get("use", "sig") != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    algorithms = _jwk_algorithms(jwk) & allowed
    if "alg" in jwk:
        algorithms &= {jwk["alg"]}
    if not algorithms:
        return None
    kty = jwk["kty"]
    if kty != "oct" and "d" in jwk:
        raise ValueError(f"kid {kid!r} holds private key material; publish public keys only")
    members = _PUBLIC_MEMBERS[kty]
    if not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError(f"kid {kid!r}: {kty} key needs string members {', '.join(members)}")
    public = {"kty": kty, **{name: jwk[name] for name in members}}
    try:
        # Built from public members only, so the loaders return public keys.
        key = cast(_Key, _JWK_LOADERS[kty](public))
    except (InvalidKeyError, ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"kid {kid!r}: not a valid {kty} key") from None
    return _verify_key(key, kid, algorithms & _key_algorithms(key))
