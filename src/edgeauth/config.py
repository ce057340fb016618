"""Policy file -> validated, compiled :class:`~edgeauth.policy.Policy`.

Loading is all-or-nothing: every problem in the file is collected and raised
together as one :class:`~edgeauth.errors.ConfigError`, each naming the key
path (``rules[2].authenticate[0]``), the line where known, and what was
expected. ``${VAR}`` in any string is replaced from the environment; a missing
variable is an error. A key this version does not know is an error.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .audit import FileAuditSink
from .authn.apikey import ApiKeyAuthenticator, load_keys_file
from .authn.base import Authenticator, CredentialSource
from .authn.cache import TokenCache
from .authn.jwks import RemoteJwks
from .authn.jwt import JwtAuthenticator, KeyProvider, StaticKeys
from .authz import Requirement
from .cors import DEFAULT_HEADERS, DEFAULT_METHODS, CorsPolicy
from .errors import ConfigError, ConfigIssue
from .headers import DEFAULT_IDENTITY_HEADERS, HeaderField, IdentityHeaders, validate_header_name
from .model import Kind
from .policy import ForwardAuthSettings, Network, Policy, Rule, ServerSettings, State, workers_issue
from .ratelimit import Limit
from .rules import HostPattern, Matcher, RuleSet, compile_pattern, normalize_methods
from .state import RedisTarget, StateSettings, parse_redis_url

__all__ = ["load_policy", "parse_listen"]

Loc = tuple[str | int, ...]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_METHOD = re.compile(r"[A-Za-z]+")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Server(_Model):
    listen: str = "127.0.0.1:8080"
    upstream: str | None = None
    upstream_host: str | None = None
    trusted_proxies: list[str] = []
    public_origin: str | None = None
    workers: int = Field(1, ge=1, le=64)
    connect_timeout: float = Field(5.0, gt=0, le=300)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    head_timeout: float = Field(10.0, gt=0, le=300)
    max_head_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(100, ge=8, le=1000)
    tls_cert: str | None = None
    tls_key: str | None = None


class _Identity(_Model):
    headers: dict[str, str] | None = None
    strip: list[str] = []


class _Jwt(_Model):
    type: Literal["jwt"]
    from_: str | list[str] = Field(alias="from")
    algorithms: list[str] = Field(min_length=1)
    secret: str | None = None
    secret_encoding: Literal["utf-8", "base64"] = "utf-8"
    public_key: str | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | list[str] | None = None
    any_issuer: bool = False
    any_audience: bool = False
    leeway: float = Field(0.0, ge=0, le=600)
    required_claims: list[Literal["exp", "nbf", "iat", "jti", "sub", "iss", "aud"]] = ["exp"]
    subject_claim: str = "sub"
    roles_claim: str | list[str] | None = None
    scopes_claim: str | list[str] | None = "scope"
    forward_credential: bool = True
    jwks_ttl_min: float = Field(60.0, ge=0, le=86400)
    jwks_ttl_max: float = Field(3600.0, ge=1, le=7 * 86400)
    jwks_cooldown: float = Field(30.0, ge=0, le=3600)
    jwks_timeout: float = Field(5.0, gt=0, le=60)


class _ApiKey(_Model):
    type: Literal["api_key"]
    from_: str | list[str] = Field(["bearer", "header:x-api-key"], alias="from")
    keys_file: str
    forward_credential: bool = False


class _Require(_Model):
    roles: list[str] = []
    scopes: list[str] = []
    claims: dict[str, str | int | float | bool] = {}


class _Cors(_Model):
    origins: list[str] = Field(min_length=1)
    methods: list[str] = list(DEFAULT_METHODS)
    headers: list[str] = list(DEFAULT_HEADERS)
    credentials: bool = False
    max_age: int = Field(600, ge=0, le=86400)


class _Rule(_Model):
    id: str | None = None
    match: str | list[str]
    methods: list[str] | None = None
    hosts: list[str] | None = None
    kind: Literal["api", "page", "auto"] = "api"
    authenticate: list[str] = []
    public: bool = False
    require: _Require | None = None
    login_url: str | None = None
    cors: _Cors | None = None
    max_body: int | None = Field(None, ge=0)
    rate_limit: str | list[str] | None = None
    count_upstream_401: bool = False


class _ForwardAuth(_Model):
    path: str = "/_edgeauth/auth"
    dialect: Literal["nginx", "traefik", "caddy", "envoy"]
    trusted: list[str] = Field(min_length=1)


class _Default(_Model):
    action: Literal["deny", "allow"] = "deny"


class _Cache(_Model):
    tokens: int = Field(10_000, ge=0, le=10_000_000)


class _Audit(_Model):
    allows: bool = False
    file: str | None = None


class _State(_Model):
    redis_url: str | None = None
    on_store_error: Literal["allow", "deny"] = "allow"
    revocation_max_staleness: float = Field(30.0, ge=1, le=86400)
    revocation_file: str | None = None
    timeout: float = Field(0.5, gt=0, le=30)
    key_prefix: str = "edgeauth:"


class _Protection(_Model):
    failed_auth: str | None = None


_SECTIONS = (
    "server",
    "identity",
    "default",
    "cache",
    "audit",
    "forward_auth",
    "state",
    "protection",
)
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


M = TypeVar("M", bound=_Model)


def load_policy(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Policy:
    """Load, validate and compile a TOML policy file.

    >>> policy = load_policy("edgeauth.toml")      # doctest: +SKIP

    Raises :class:`~edgeauth.errors.ConfigError` listing every problem found.
    """
    file = Path(path)
    name = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            name, [ConfigIssue("", f"cannot read the file: {_os_reason(exc)}")]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        issue = ConfigIssue("", f"not valid TOML: {exc}", int(line.group(1)) if line else None)
        raise ConfigError(name, [issue]) from None
    builder = _Builder(
        name, file.parent, _LineIndex(text), os.environ if environ is None else environ
    )
    return builder.build(data)


class _Builder:
    def __init__(
        self, name: str, base: Path, lines: _LineIndex, environ: Mapping[str, str]
    ) -> None:
        self.name = name
        self.base = base
        self.lines = lines
        self.environ = environ
        self.issues: list[ConfigIssue] = []
        self._unset: list[Loc] = []
        self.attempts = 0  # problems found, reported or not

    def issue(self, loc: Loc, message: str) -> None:
        # A value left empty by a missing ${VAR} would draw more, misleading
        # errors from the same table: report only the missing variable.
        self.attempts += 1
        if any(_related(loc, failed) for failed in self._unset):
            return
        self.issues.append(ConfigIssue(_dotted(loc), message, self.lines.find(loc)))

    def fail(self) -> ConfigError:
        # In the file's order; issues without a line (a whole file) last.
        issues = sorted(self.issues, key=lambda i: (i.line is None, i.line or 0))
        return ConfigError(self.name, issues)

    def validate(self, model: type[M], data: Any, loc: Loc) -> M | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # A value that fits none of a union's types draws one error per
            # type, each under the type's name (``match.str``): one issue per
            # key of the file, its expectations joined.
            expected: dict[Loc, list[str]] = {}
            unions: set[Loc] = set()  # where a union's member names were dropped
            for err in exc.errors():
                where = tuple(err["loc"])
                if err["type"] != "missing":
                    inside = _within(data, where)
                    if len(inside) < len(where):
                        unions.add(inside)
                    where = inside
                message = _explain(err)
                seen = expected.setdefault(where, [])
                if message not in seen:
                    seen.append(message)
            for where, messages in expected.items():
                # A member that got further into the value (a list with one
                # wrong item) says more than the others ("expected a string").
                if where in unions and any(
                    len(other) > len(where) and other[: len(where)] == where for other in expected
                ):
                    continue
                self.issue((*loc, *where), _joined(messages))
            return None

    def build(self, raw: dict[str, Any]) -> Policy:
        data = self._expand(raw, ())
        # Each section is validated on its own, so that every problem in the
        # file is reported at once, not only those of the first bad section.
        for key in data:
            if key not in (*_SECTIONS, "authenticators", "rules"):
                self.issue((key,), "unknown key (this version does not support it)")
        server_m = self.validate(_Server, data.get("server", {}), ("server",))
        identity_m = self.validate(_Identity, data.get("identity", {}), ("identity",))
        default = self.validate(_Default, data.get("default", {}), ("default",)) or _Default()
        cache_m = self.validate(_Cache, data.get("cache", {}), ("cache",)) or _Cache()
        audit = self.validate(_Audit, data.get("audit", {}), ("audit",)) or _Audit()
        audit_sink = self._audit_sink(audit.file)
        state_m = self.validate(_State, data.get("state", {}), ("state",))
        protection = self.validate(_Protection, data.get("protection", {}), ("protection",))
        settings = self._state(state_m) if state_m is not None else StateSettings()
        failed_auth = self._failed_auth(protection) if protection is not None else None
        forward_auth = None
        if "forward_auth" in data:
            fa = self.validate(_ForwardAuth, data["forward_auth"], ("forward_auth",))
            forward_auth = self._forward_auth(fa) if fa is not None else None
        tables = data.get("authenticators", {})
        if not isinstance(tables, dict):
            self.issue(("authenticators",), "expected a table of authenticators")
            tables = {}
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            self.issue(("rules",), "expected at least one [[rules]] table")
            rules = []
        server = self._server(server_m) if server_m else ServerSettings()
        cache = TokenCache(cache_m.tokens) if cache_m.tokens > 0 else None
        authenticators: dict[str, Authenticator] = {}
        for aid, table in tables.items():
            built = self._authenticator(aid, table, cache)
            if built is not None:
                authenticators[aid] = built
        credential_headers = {
            s.name for a in authenticators.values() for s in a.sources if s.kind == "header"
        }
        identity = self._identity(identity_m or _Identity(), credential_headers)
        matchers = []
        models: list[tuple[int, _Rule]] = []
        for i, table in enumerate(rules):
            model = self.validate(_Rule, table, ("rules", i))
            if model is not None:
                models.append((i, model))
                matchers.append(self._rule(i, model, authenticators, set(tables)))
                if model.count_upstream_401 and protection and protection.failed_auth is None:
                    self.issue(
                        ("rules", i, "count_upstream_401"),
                        "needs [protection] failed_auth (the lockout these 401s count toward)",
                    )
        self._unique_ids(models)
        compiled_rules = [m.target for m in matchers if m is not None]
        counters = failed_auth is not None or any(r.limits for r in compiled_rules)
        shared = state_m is not None and state_m.redis_url is not None
        if server_m is not None and not shared and counters and server_m.workers > 1:
            issue = workers_issue(server_m.workers)
            self.issue(("server", "workers"), issue.message)
        if self.issues:
            raise self.fail()
        return Policy(
            source=self.name,
            rules=RuleSet([m for m in matchers if m is not None]),
            identity=identity,
            authenticators=authenticators,
            server=server,
            default_allow=default.action == "allow",
            audit_allows=audit.allows,
            audit_sink=audit_sink,
            forward_auth=forward_auth,
            state=State.build(settings),
            failed_auth=failed_auth,
            upstream_401_rules=frozenset(r.id for r in compiled_rules if r.count_upstream_401),
            counters=counters,
        )

    # ${VAR} expansion, before validation, so errors name the key.
    def _expand(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, str):
            return _ENV.sub(lambda m: self._env(m.group(1), loc), value)
        if isinstance(value, dict):
            return {k: self._expand(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._expand(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    def _env(self, var: str, loc: Loc) -> str:
        found = self.environ.get(var)
        if found is None:
            self.issue(loc, f"environment variable {var} is not set")
            self._unset.append(loc)
            return ""
        return found

    def _server(self, s: _Server) -> ServerSettings:
        networks = self._networks(s.trusted_proxies, ("server", "trusted_proxies"))
        problem = _origin_problem(s.public_origin) if s.public_origin is not None else None
        if problem:
            self.issue(("server", "public_origin"), problem)
        try:
            parse_listen(s.listen)
        except ValueError as exc:
            self.issue(("server", "listen"), str(exc))
        if s.upstream is not None:
            problem = _upstream_problem(s.upstream)
            if problem:
                self.issue(("server", "upstream"), problem)
        if (s.tls_cert is None) != (s.tls_key is None):
            self.issue(("server", "tls_cert"), "tls_cert and tls_key go together")
        elif s.tls_cert and s.tls_key:
            problem = _tls_problem(self._path(s.tls_cert), self._path(s.tls_key))
            if problem:
                self.issue(("server", "tls_cert"), problem)
        return ServerSettings(
            listen=s.listen,
            upstream=s.upstream,
            upstream_host=s.upstream_host,
            trusted_proxies=networks,
            public_origin=s.public_origin,
            workers=s.workers,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            head_timeout=s.head_timeout,
            max_head_bytes=s.max_head_bytes,
            max_headers=s.max_headers,
            tls_cert=self._path(s.tls_cert) if s.tls_cert else None,
            tls_key=self._path(s.tls_key) if s.tls_key else None,
        )

    def _state(self, m: _State) -> StateSettings:
        redis: RedisTarget | None = None
        if m.redis_url is not None:
            try:
                redis = parse_redis_url(m.redis_url)
            except ValueError as exc:
                self.issue(("state", "redis_url"), str(exc))
            if importlib.util.find_spec("redis") is None:
                self.issue(
                    ("state", "redis_url"),
                    "needs the redis package: pip install 'edgeauth[redis]'",
                )
            if m.revocation_file is not None:
                self.issue(
                    ("state", "revocation_file"),
                    "revocations live in Redis when redis_url is set; remove revocation_file",
                )
        if not _KEY_PREFIX.fullmatch(m.key_prefix):
            self.issue(
                ("state", "key_prefix"),
                "expected 1 to 64 letters, digits, '_', '.', ':' or '-' (no braces)",
            )
        # Without Redis, revocations persist next to the policy file by default.
        revocation_file = None
        if m.redis_url is None:
            default = f"{Path(self.name).stem}.revocations.json"
            revocation_file = self._path(m.revocation_file or default)
        return StateSettings(
            redis=redis,
            on_store_error=m.on_store_error,
            revocation_max_staleness=m.revocation_max_staleness,
            revocation_file=revocation_file,
            timeout=m.timeout,
            key_prefix=m.key_prefix,
        )

    def _failed_auth(self, m: _Protection) -> Limit | None:
        if m.failed_auth is None:
            return None
        loc = ("protection", "failed_auth")
        try:
            limit = Limit.parse(m.failed_auth)
        except ValueError as exc:
            self.issue(loc, str(exc))
            return None
        if limit.scope != "ip":
            self.issue(loc, "failed-auth lockout is per ip: expected 'N/minute per ip'")
            return None
        return limit

    def _limits(self, r: _Rule, chain: Sequence[Authenticator], loc: Loc) -> tuple[Limit, ...]:
        if r.rate_limit is None:
            return ()
        specs = [r.rate_limit] if isinstance(r.rate_limit, str) else r.rate_limit
        if not specs:
            self.issue((*loc, "rate_limit"), "expected at least one limit")
        limits: list[Limit] = []
        for i, spec in enumerate(specs):
            at = (*loc, "rate_limit") if isinstance(r.rate_limit, str) else (*loc, "rate_limit", i)
            try:
                limit = Limit.parse(spec)
            except ValueError as exc:
                self.issue(at, str(exc))
                continue
            if limit in limits:
                self.issue(at, "the same limit is given twice")
            elif limit.scope != "ip" and not chain:
                self.issue(at, f"a limit per {limit.scope} needs authenticate = [...]")
            elif limit.scope == "api_key" and not any(
                isinstance(a, ApiKeyAuthenticator) for a in chain
            ):
                self.issue(at, "a limit per api_key needs an api_key authenticator on the rule")
            limits.append(limit)
        return tuple(limits)

    def _networks(self, values: Sequence[str], loc: Loc) -> tuple[Network, ...]:
        networks: list[Network] = []
        for i, cidr in enumerate(values):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                self.issue((*loc, i), f"expected an IP address or CIDR, got {cidr!r}")
        return tuple(networks)

    def _forward_auth(self, fa: _ForwardAuth) -> ForwardAuthSettings:
        try:
            compile_pattern(fa.path)
        except ValueError as exc:
            self.issue(("forward_auth", "path"), str(exc))
        if "*" in fa.path:
            self.issue(("forward_auth", "path"), "expected a plain path like '/_edgeauth/auth'")
        trusted = self._networks(fa.trusted, ("forward_auth", "trusted"))
        return ForwardAuthSettings(
            path=fa.path.rstrip("/") or "/", dialect=fa.dialect, trusted=trusted
        )

    def _identity(self, ident: _Identity, credential_headers: set[str]) -> IdentityHeaders:
        fields: list[HeaderField] = []
        seen: set[str] = set()
        for name, spec in (
            ident.headers if ident.headers is not None else DEFAULT_IDENTITY_HEADERS
        ).items():
            loc = ("identity", "headers", name)
            try:
                lowered = validate_header_name(name)
                field = HeaderField.parse(lowered, spec)
            except ValueError as exc:
                self.issue(loc, str(exc))
                continue
            if lowered.replace("_", "-") in seen:
                self.issue(loc, "configured twice (header names differ only by case or '_')")
            seen.add(lowered.replace("_", "-"))
            fields.append(field)
        for i, name in enumerate(ident.strip):
            try:
                validate_header_name(name, "be stripped")
            except ValueError as exc:
                self.issue(("identity", "strip", i), str(exc))
        return IdentityHeaders(fields, ident.strip, credential_headers)

    def _authenticator_model(self, aid: str, table: Any) -> _Jwt | _ApiKey | None:
        loc: Loc = ("authenticators", aid)
        if not _ID.fullmatch(aid):
            self.issue(loc, "an authenticator id is letters, digits, '-', '_' or '.'")
        kind = table.get("type") if isinstance(table, dict) else None
        if kind == "jwt":
            return self.validate(_Jwt, table, loc)
        if kind == "api_key":
            return self.validate(_ApiKey, table, loc)
        self.issue((*loc, "type"), f"expected 'jwt' or 'api_key', got {kind!r}")
        return None

    def _authenticator(
        self, aid: str, table: dict[str, Any], cache: TokenCache | None
    ) -> Authenticator | None:
        model = self._authenticator_model(aid, table)
        loc: Loc = ("authenticators", aid)
        sources = self._sources(model.from_, (*loc, "from")) if model is not None else None
        if model is None or sources is None:
            return None
        if isinstance(model, _ApiKey):
            try:
                store = load_keys_file(self._path(model.keys_file))
            except ConfigError as exc:
                for issue in exc.issues:
                    self.issue((*loc, "keys_file"), f"{exc.file}: {issue}")
                return None
            return ApiKeyAuthenticator(
                aid, sources=sources, keys=store, forward_credential=model.forward_credential
            )
        return self._jwt(aid, model, sources, cache)

    def _sources(self, spec: str | list[str], loc: Loc) -> tuple[CredentialSource, ...] | None:
        items = [spec] if isinstance(spec, str) else spec
        if not items:
            self.issue(loc, "expected at least one credential place")
            return None
        out: list[CredentialSource] = []
        for i, text in enumerate(items):
            try:
                out.append(CredentialSource.parse(text))
            except ValueError as exc:
                self.issue(loc if isinstance(spec, str) else (*loc, i), str(exc))
        return tuple(dict.fromkeys(out)) if len(out) == len(items) else None

    def _jwt(
        self, aid: str, m: _Jwt, sources: tuple[CredentialSource, ...], cache: TokenCache | None
    ) -> Authenticator | None:
        loc: Loc = ("authenticators", aid)
        before = self.attempts
        algorithms = list(dict.fromkeys(m.algorithms))
        for i, alg in enumerate(algorithms):
            if alg not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
                known = ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
                self.issue(
                    (*loc, "algorithms", i),
                    f"unsupported algorithm {alg!r}; expected one of {known}",
                )
        hmac = {a for a in algorithms if a in HMAC_ALGORITHMS}
        if hmac and any(a in ASYMMETRIC_ALGORITHMS for a in algorithms):
            self.issue(
                (*loc, "algorithms"), "HMAC (HS*) and public-key algorithms may not be mixed"
            )
        key_sources = [
            k for k in ("secret", "public_key", "jwks_file", "jwks_url") if getattr(m, k)
        ]
        if len(key_sources) != 1:
            self.issue(loc, "expected exactly one of secret, public_key, jwks_file, jwks_url")
        elif hmac and key_sources[0] != "secret":
            self.issue((*loc, key_sources[0]), "HS* algorithms take a secret")
        elif not hmac and key_sources[0] == "secret":
            self.issue((*loc, "secret"), "a secret works only with HS* algorithms")
        public = bool(key_sources) and key_sources[0] != "secret"
        for key, waiver, value in (
            ("issuer", "any_issuer", m.issuer),
            ("audience", "any_audience", m.audience),
        ):
            waived = getattr(m, waiver)
            if value is not None and waived:
                self.issue((*loc, waiver), f"{waiver} = true contradicts {key}")
            elif public and value is None and not waived:
                self.issue((*loc, key), f"required with {key_sources[0]} (or set {waiver} = true)")
        if m.jwks_ttl_min > m.jwks_ttl_max:
            self.issue((*loc, "jwks_ttl_min"), "must not exceed jwks_ttl_max")
        if self.attempts > before:
            return None
        keys = self._keys(m, key_sources[0], algorithms, loc)
        if keys is None:
            return None
        audience = [m.audience] if isinstance(m.audience, str) else m.audience
        return JwtAuthenticator(
            aid,
            sources=sources,
            algorithms=algorithms,
            keys=keys,
            issuer=m.issuer,
            audience=audience,
            leeway=m.leeway,
            required_claims=m.required_claims,
            subject_claim=m.subject_claim,
            roles_claim=_claim_ref(m.roles_claim),
            scopes_claim=_claim_ref(m.scopes_claim),
            forward_credential=m.forward_credential,
            cache=cache,
        )

    def _keys(self, m: _Jwt, kind: str, algorithms: list[str], loc: Loc) -> KeyProvider | None:
        at = (*loc, kind)
        try:
            if kind == "secret":
                assert m.secret is not None
                secret = m.secret.encode()
                if m.secret_encoding == "base64":
                    secret = base64.b64decode(m.secret, validate=True)
                return StaticKeys.from_secret(secret, algorithms)
            if kind == "jwks_url":
                assert m.jwks_url is not None
                _check_jwks_url(m.jwks_url)
                return RemoteJwks(
                    m.jwks_url,
                    algorithms=algorithms,
                    ttl_min=m.jwks_ttl_min,
                    ttl_max=m.jwks_ttl_max,
                    cooldown=m.jwks_cooldown,
                    timeout=m.jwks_timeout,
                )
            file = self._path(getattr(m, kind))
            content = Path(file).read_bytes()
            if kind == "public_key":
                return StaticKeys.from_pem(content, algorithms)
            return StaticKeys.from_jwks(json.loads(content), algorithms)
        except binascii.Error:
            self.issue(at, "expected base64 (secret_encoding = 'base64')")
        except OSError as exc:
            self.issue(at, f"cannot read {getattr(m, kind)!r}: {_os_reason(exc)}")
        except json.JSONDecodeError as exc:
            self.issue(at, f"not a JSON document (line {exc.lineno})")
        except ValueError as exc:
            self.issue(at, str(exc))
        return None

    def _rule(
        self, index: int, r: _Rule, authenticators: Mapping[str, Authenticator], declared: set[str]
    ) -> Matcher[Rule] | None:
        loc: Loc = ("rules", index)
        before = self.attempts
        patterns = [r.match] if isinstance(r.match, str) else r.match
        if not patterns:
            self.issue((*loc, "match"), "expected at least one path pattern")
        compiled = []
        for i, pattern in enumerate(patterns):
            try:
                compiled.append(compile_pattern(pattern))
            except ValueError as exc:
                self.issue(
                    (*loc, "match") if isinstance(r.match, str) else (*loc, "match", i), str(exc)
                )
        methods = None
        if r.methods is not None:
            for i, method in enumerate(r.methods):
                if not _METHOD.fullmatch(method):
                    self.issue(
                        (*loc, "methods", i), f"expected an HTTP method name, got {method!r}"
                    )
            methods = normalize_methods(r.methods)
        hosts = None
        if r.hosts is not None:
            hosts = []
            for i, host in enumerate(r.hosts):
                try:
                    hosts.append(HostPattern.parse(host))
                except ValueError as exc:
                    self.issue((*loc, "hosts", i), str(exc))
        chain: list[Authenticator] = []
        for i, aid in enumerate(r.authenticate):
            if aid in authenticators:
                chain.append(authenticators[aid])
            elif aid not in declared:  # a declared one that failed to build has its own error
                self.issue((*loc, "authenticate", i), f"no authenticator {aid!r} is defined")
        if not r.public and not r.authenticate:
            self.issue(loc, "a rule needs authenticate = [...] or public = true")
        if r.require is not None and (r.public or not r.authenticate):
            self.issue((*loc, "require"), "require needs authenticate = [...] and no public = true")
        kind = Kind(r.kind)
        if kind is not Kind.API and r.authenticate and not r.public and r.login_url is None:
            self.issue(loc, f"a {r.kind} rule that authenticates needs login_url")
        if r.login_url is not None and not _is_login_url(r.login_url):
            self.issue((*loc, "login_url"), "expected a path like '/login' or an https:// URL")
        cors = self._cors(r.cors, (*loc, "cors")) if r.cors is not None else None
        if r.id is not None and not _ID.fullmatch(r.id):
            self.issue((*loc, "id"), "a rule id is letters, digits, '-', '_' or '.'")
        limits = self._limits(r, chain, loc)
        if self.attempts > before:
            return None
        req = r.require or _Require()
        rule = Rule(
            id=r.id or f"rules[{index}]",
            kind=kind,
            public=r.public,
            authenticators=tuple(chain),
            require=Requirement.build(req.roles, req.scopes, req.claims),
            login_url=r.login_url,
            cors=cors,
            max_body=r.max_body,
            limits=limits,
            count_upstream_401=r.count_upstream_401,
        )
        return Matcher(tuple(compiled), methods, tuple(hosts) if hosts is not None else None, rule)

    def _cors(self, c: _Cors, loc: Loc) -> CorsPolicy | None:
        for i, origin in enumerate(c.origins):
            problem = None if origin in ("*", "null") else _origin_problem(origin)
            if problem:
                self.issue((*loc, "origins", i), problem)
        if c.credentials and "*" in c.origins:
            self.issue((*loc, "origins"), "'*' cannot be used with credentials = true")
        for i, method in enumerate(c.methods):
            if not _METHOD.fullmatch(method):
                self.issue((*loc, "methods", i), f"expected an HTTP method name, got {method!r}")
        for i, header in enumerate(c.headers):
            try:
                validate_header_name(header) if header.lower() != "authorization" else None
            except ValueError as exc:
                self.issue((*loc, "headers", i), str(exc))
        return CorsPolicy.build(c.origins, c.methods, c.headers, c.credentials, c.max_age)

    def _unique_ids(self, rules: Sequence[tuple[int, _Rule]]) -> None:
        seen: set[str] = set()
        for i, r in rules:
            if r.id is not None:
                if r.id in seen:
                    self.issue(("rules", i, "id"), f"rule id {r.id!r} is used twice")
                seen.add(r.id)

    def _path(self, value: str) -> str:
        return str(self.base / value)

    def _audit_sink(self, value: str | None) -> FileAuditSink | None:
        if value is None:
            return None
        path = Path(self._path(value))
        if not value or path.is_dir():
            self.issue(("audit", "file"), f"expected a file path, got {value!r}")
        elif not path.parent.is_dir():
            self.issue(("audit", "file"), f"expected a file in an existing folder, got {value!r}")
        return FileAuditSink(path)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port).

    >>> parse_listen("127.0.0.1:8080"), parse_listen("[::1]:0")
    (('127.0.0.1', 8080), ('::1', 0))
    """
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"expected host:port, got {listen!r}")
    return host, int(port)


def _upstream_problem(url: str) -> str | None:
    """What is wrong with ``[server] upstream``, if anything: the request's
    path and query are appended to it, so it is a scheme, a host, an optional
    port and an optional path prefix, nothing else."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError:
        return f"expected an http:// or https:// URL with a port from 0 to 65535, got {url!r}"
    if parts.scheme not in ("http", "https") or not _is_host(parts):
        return "expected an http:// or https:// URL"
    if "@" in parts.netloc:
        return "expected no user:password@ in the URL: edgeauth sends the upstream no credentials"
    if "?" in url or "#" in url:
        return "expected no query or fragment: each request's path and query are appended"
    return None


def _tls_problem(cert: str, key: str) -> str | None:
    """Why the certificate and key cannot serve HTTPS, if they cannot: a file
    missing or unreadable, not PEM, or a key that is not the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A key protected by a passphrase fails here instead of prompting.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except OSError as exc:  # ssl.SSLError included
        reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
        return f"cannot load the certificate {cert!r} with the key {key!r}: {reason}"
    return None


def _related(loc: Loc, failed: Loc) -> bool:
    """Is ``loc`` the table holding ``failed``, or inside that table?"""
    table = failed[:-1]
    return loc[: len(table)] == table if len(loc) >= len(table) else failed[: len(loc)] == loc


def _claim_ref(value: str | list[str] | None) -> str | tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else value


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname == "localhost" or _is_loopback(parts.hostname or "")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("expected an https:// URL (http:// only for a loopback address)")
    if not parts.hostname:
        raise ValueError("expected a URL with a host")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8 or ::1."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_problem(value: str) -> str | None:
    """What keeps ``value`` from being an origin as browsers send it
    (``scheme://host[:port]``, lower case), if anything."""
    expected = f"expected an origin like 'https://app.example.com', got {value!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # not a port number, an unclosed [
        return expected
    if not (
        parts.scheme in ("http", "https")
        and _is_host(parts)
        and parts.path == ""
        and "?" not in value
        and "#" not in value
        and "@" not in parts.netloc
        and value == value.lower()
    ):
        return expected
    if port == _DEFAULT_PORTS[parts.scheme]:
        bare = value.rsplit(":", 1)[0]
        return (
            f"expected {bare!r}: browsers send an origin without its scheme's default port,"
            f" so {value!r} would never match"
        )
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_host(parts: SplitResult) -> bool:
    """A host name or an IP address, and a port if the URL has a ':' for one."""
    host = parts.hostname or ""
    if parts.netloc.endswith(":"):
        return False  # an empty port
    if ":" in host:  # IPv6, written in brackets
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST_NAME.fullmatch(host))


# Labels of letters, digits, '-' and '_' (container and service names have them).
_HOST_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?"
)


def _is_login_url(value: str) -> bool:
    if value.startswith("/"):
        return not value.startswith("//") and "\\" not in value
    parts = urlsplit(value)
    return parts.scheme in ("https", "http") and bool(parts.hostname)


def _os_reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


_PYDANTIC_MESSAGES: dict[str, Callable[[Any], str]] = {
    "extra_forbidden": lambda e: "unknown key (this version does not support it)",
    "missing": lambda e: "required key is missing",
    "literal_error": lambda e: f"expected {e['ctx']['expected']}",
    "string_type": lambda e: "expected a string",
    "bool_type": lambda e: "expected true or false",
    "int_type": lambda e: "expected an integer",
    "float_type": lambda e: "expected a number",
    "list_type": lambda e: "expected a list",
    "dict_type": lambda e: "expected a table",
    "model_type": lambda e: "expected a table",
    "greater_than_equal": lambda e: f"expected at least {e['ctx']['ge']}, got {e['input']!r}",
    "greater_than": lambda e: f"expected more than {e['ctx']['gt']}, got {e['input']!r}",
    "less_than_equal": lambda e: f"expected at most {e['ctx']['le']}, got {e['input']!r}",
    "less_than": lambda e: f"expected less than {e['ctx']['lt']}, got {e['input']!r}",
    "too_short": lambda e: f"expected at least {e['ctx']['min_length']} item(s)",
    "too_long": lambda e: f"expected at most {e['ctx']['max_length']} item(s)",
}


def _within(data: Any, loc: Loc) -> Loc:
    """``loc`` without what names no key or item of ``data``: the names of a
    union's member types (``match.str``, ``match["list[str]"][1]``), which are
    nothing in the file."""
    node = data
    inside: list[str | int] = []
    for part in loc:
        in_table = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_table or in_list:
            node = node[part]
            inside.append(part)
    return tuple(inside)


def _joined(messages: list[str]) -> str:
    """``expected a string`` and ``expected a list`` as ``expected a string or a list``."""
    if len(messages) > 1 and all(m.startswith("expected ") for m in messages):
        return "expected " + " or ".join(m[len("expected ") :] for m in messages)
    return "; ".join(messages)


def _explain(err: Any) -> str:
    render = _PYDANTIC_MESSAGES.get(err["type"])
    return render(err) if render else str(err["msg"])


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


class _LineIndex:
    """Where keys are in the TOML text: tomllib gives no positions, so the
    table headers and ``key =`` lines are scanned once (best effort)."""

    _TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    _ARRAY = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

    def __init__(self, text: str) -> None:
        self._lines: dict[Loc, int] = {}
        counts: dict[Loc, int] = {}
        table: Loc = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if m := self._ARRAY.match(line):
                key = _split_key(m.group(1))
                index = counts.get(key, 0)
                counts[key] = index + 1
                table = (*key, index)
            elif m := self._TABLE.match(line):
                table = _split_key(m.group(1))
            elif m := self._KEY.match(line):
                self._lines.setdefault((*table, *_split_key(m.group(1))), number)
                continue
            else:
                continue
            self._lines.setdefault(table, number)

    def find(self, loc: Loc) -> int | None:
        for end in range(len(loc), 0, -1):
            found = self._lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return None


def _split_key(text: str) -> Loc:
    return tuple(part.strip().strip("\"'") for part in _iter_key(text))


def _iter_key(text: str) -> Iterator[str]:
    part, quote = "", ""
    for ch in text:
        if quote:
            part += ch
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            part += ch
            quote = ch
        elif ch == ".":
            yield part
            part = ""
        else:
            part += ch
    yield part
