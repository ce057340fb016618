"""Timing: API keys and HMAC signatures are compared in constant time.

Shown by the code path (CWE-208, Python docs for ``hmac.compare_digest``),
not by measuring time: a spy stands in for ``hmac.compare_digest`` and the
requests that verify a credential must go through it with the secret-derived
values, and nothing on those paths compares the secrets with ``==``.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jwt.algorithms import HMACAlgorithm

from edgeauth import EdgeAuth, load_policy
from edgeauth.authn import apikey
from edgeauth.authn.apikey import KeyStore

from .. import servers
from ..helpers import RawRequest, Response, call
from .common import API_KEY, MIDDLEWARE_SETTINGS, SECRET, claims, hs, write_security_policy
from .harness import Recorder


class CompareSpy:
    """``hmac.compare_digest``, recording its arguments."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return bool(self.real(a, b))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> CompareSpy:
    spy = CompareSpy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


@pytest.fixture
def app(tmp_path: Path) -> EdgeAuth:
    server = servers.server_section(0, None, **MIDDLEWARE_SETTINGS)
    return EdgeAuth(Recorder(), policy=load_policy(write_security_policy(tmp_path, server)))


async def get(app: EdgeAuth, path: bytes, *headers: tuple[str, str]) -> Response:
    return await call(app, RawRequest(raw_path=path, headers=[("host", "app.test"), *headers]))


async def test_api_key_match_is_decided_by_compare_digest(app: EdgeAuth, spy: CompareSpy) -> None:
    """A matching API key is accepted through compare_digest on its SHA-256, never the key."""
    r = await get(app, b"/api/v1/reports", ("x-api-key", API_KEY))
    assert r.status == 200
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    assert spy.calls == [(digest, digest)]
    assert all(API_KEY not in (a, b) for a, b in spy.calls)


async def test_api_key_is_hashed_before_any_comparison(
    app: EdgeAuth, spy: CompareSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The presented key is hashed first: the store is indexed by digest, so no
    comparison's timing depends on the key's own bytes."""
    hashed: list[str] = []
    real = apikey._digest_of

    def digest_of(key: str) -> str:
        hashed.append(key)
        return real(key)

    monkeypatch.setattr(apikey, "_digest_of", digest_of)
    near_miss = API_KEY[:-1] + ("x" if API_KEY[-1] != "x" else "y")
    r = await get(app, b"/api/v1/reports", ("x-api-key", near_miss))
    assert r.status == 401
    assert hashed == [near_miss]
    assert spy.calls == []  # a digest that is not in the store is never compared


def test_the_key_store_holds_digests_only() -> None:
    """The index holds SHA-256 digests, never a key that could be compared directly."""
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    store = KeyStore([apikey.ApiKeyEntry("k", digest, "svc")])
    entry = store.lookup(API_KEY)
    assert entry is not None
    assert API_KEY not in repr(entry) and API_KEY not in repr(vars(apikey.KeyStore))


async def test_hmac_signature_is_checked_by_compare_digest(app: EdgeAuth, spy: CompareSpy) -> None:
    """An HS256 session's signature is compared with compare_digest, valid or not."""
    token = hs({"alg": "HS256"}, claims(jti="timing-1"))
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await get(app, b"/api/protected/me", ("cookie", f"session={token}"))).status == 200
    assert (await get(app, b"/api/protected/me", ("cookie", f"session={forged}"))).status == 401
    sizes = [(len(a), len(b)) for a, b in spy.calls]
    assert sizes == [(32, 32), (32, 32)]  # HMAC-SHA256 outputs, given and computed
    assert all(SECRET.encode() not in (a, b) for a, b in spy.calls)


def _calls_and_equalities(function: Any) -> tuple[set[str], int]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    equalities = sum(
        isinstance(op, ast.Eq | ast.NotEq)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        for op in node.ops
    )
    return calls, equalities


@pytest.mark.parametrize("function", [KeyStore.lookup, HMACAlgorithm.verify])
def test_no_comparison_on_these_paths_uses_equality(function: Any) -> None:
    """The code that compares secret-derived values calls compare_digest, never '=='."""
    calls, equalities = _calls_and_equalities(function)
    assert "hmac.compare_digest" in calls
    assert equalities == 0
