"""The two builds: the suite runs against the one scripts/test asked for.

scripts/test runs the suite twice: against the Python sources (with coverage),
then with build/compiled first on the path, where the modules listed in
pyproject.toml's [tool.edgeauth.mypyc] are C extensions compiled by mypyc. If
the second run silently imported the sources, it would test nothing new.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import tomllib
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


def test_the_build_under_test_is_the_one_asked_for() -> None:
    assert BUILD in ("source", "compiled"), BUILD
    kinds = {_module(path): _is_extension(_module(path)) for path in COMPILED}
    assert set(kinds.values()) == {BUILD == "compiled"}, kinds


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
