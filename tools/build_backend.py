"""edgeauth's build backend: setuptools, plus what mypyc needs for a compiled wheel.

``EDGEAUTH_MYPYC=1 pip install .`` (or ``pip wheel .``, ``python -m build``)
builds the request path as C extensions with mypyc (setup.py). mypyc compiles
from the types mypy infers, so the wheel's build environment then holds mypy
and every package the compiled modules' imports reach (the dependencies and
the server and redis extras), which this backend asks for. An sdist or an
editable install is never compiled: the variable is ignored for them (an
editable install would otherwise put extension modules in the source tree).
Any other build is pure Python and needs only setuptools.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the PEP 517 hooks, unchanged)

# The mypyc that compiled a build is part of what was tested: keep this range
# the same as the one the tests install (pyproject.toml, extra "test").
MYPYC = "mypy>=2.4,<3"


def _compiled() -> bool:
    return os.environ.get("EDGEAUTH_MYPYC") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    if not _compiled():
        return build_meta.get_requires_for_build_wheel(config_settings)
    # setup.py imports mypyc before anything else: it has no setup_requires to add.
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return [MYPYC, *project["dependencies"], *extras["server"], *extras["redis"]]


@contextmanager
def _pure() -> Iterator[None]:
    """Run a hook as a pure-Python build, whatever EDGEAUTH_MYPYC says."""
    saved = os.environ.pop("EDGEAUTH_MYPYC", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["EDGEAUTH_MYPYC"] = saved


def _pure_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _pure():
            return hook(*args, **kwargs)

    return run


get_requires_for_build_sdist = _pure_hook(build_meta.get_requires_for_build_sdist)
build_sdist = _pure_hook(build_meta.build_sdist)
get_requires_for_build_editable = _pure_hook(build_meta.get_requires_for_build_editable)
prepare_metadata_for_build_editable = _pure_hook(build_meta.prepare_metadata_for_build_editable)
build_editable = _pure_hook(build_meta.build_editable)
