"""The two builds: the suite runs against the one scripts/test asked for.

scripts/test runs the suite twice: against the Python sources (with coverage),
then with build/compiled first on the path, where the modules listed in
pyproject.toml's [tool.edgeauth.mypyc] are C extensions compiled by mypyc. If
the second run silently imported the sources, it would test nothing new.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from uvicorn.config import Config

from .helpers import guarded

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
COMPILED = PROJECT["tool"]["edgeauth"]["mypyc"]["modules"]
BUILD = os.environ.get("EDGEAUTH_TEST_BUILD", "source")


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _is_extension(name: str) -> bool:
    origin = importlib.import_module(name).__file__ or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def wrong_build() -> str | None:
    """What is wrong with the build under test, or None: every listed module
    compiled when EDGEAUTH_TEST_BUILD=compiled, none otherwise."""
    if BUILD not in ("source", "compiled"):
        return f"EDGEAUTH_TEST_BUILD={BUILD!r}; expected 'source' or 'compiled'"
    wrong = [m for m in map(_module, COMPILED) if _is_extension(m) != (BUILD == "compiled")]
    if wrong:
        return f"asked for the {BUILD} build, but {', '.join(wrong)} loaded otherwise"
    return None


def test_the_build_under_test_is_the_one_asked_for() -> None:
    """Also checked when the session starts (tests/conftest.py), for runs that
    select other tests."""
    assert wrong_build() is None, wrong_build()


def test_every_compiled_module_exists_and_the_rest_stay_python() -> None:
    """The list names real modules, and the modules it leaves out are Python in both builds."""
    package = ROOT / "src"
    listed = set(COMPILED)
    for path in listed:
        assert (package / path).is_file(), path
    for path in sorted(package.glob("edgeauth/**/*.py")):
        name = path.relative_to(package).as_posix()
        if name not in listed:
            assert not _is_extension(_module(name)), name


def test_uvicorn_serves_the_middleware_as_asgi3(tmp_path: Path) -> None:
    """uvicorn picks the ASGI 3 interface only for a coroutine function
    ``__call__``; a compiled one must still read as one."""
    config = Config(app=guarded(tmp_path), log_config=None)
    config.load()
    assert config.interface == "asgi3"


def test_the_outcome_classes_copy_and_pickle_in_both_builds() -> None:
    """An app may copy or pickle the Identity it gets (a session store): the
    compiled classes rebuild through their constructors, claims read-only again."""
    import copy
    import pickle
    from types import MappingProxyType

    from edgeauth.model import Allow, Code, Denial, Identity, RequestView

    identity = Identity(
        "alice", ("user",), ("read",), MappingProxyType({"sub": "alice", "n": [1]}),
        "session", "jwt", "k1", "j1", 1.0, 2.0,
    )  # fmt: skip
    objects = [
        identity,
        RequestView("GET", b"/x", b"q=1", {"host": ("a",)}, "https", "10.0.0.1", True),
        Allow("r1", "rule", "/x", b"/x", identity, (), ("authorization",), (), 10, True),
        Denial("r2", Code.FORBIDDEN, "rule", True, "/login", (), "no"),
    ]
    for original in objects:
        for again in (
            copy.copy(original),
            copy.deepcopy(original),
            pickle.loads(pickle.dumps(original)),
        ):
            assert type(again) is type(original)
            assert _plain(again) == _plain(original)
    for again in (copy.deepcopy(identity), pickle.loads(pickle.dumps(identity))):
        assert isinstance(again.claims, MappingProxyType)
        assert again.claims == {"sub": "alice", "n": [1]}
    plain = Identity("bob", claims={"a": 1})
    assert type(pickle.loads(pickle.dumps(plain)).claims) is dict


def _plain(obj: object) -> dict[str, object]:
    """A dataclass's fields, nested dataclasses and mappings as plain values."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out
