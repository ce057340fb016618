"""edgeauth's build backend: setuptools, plus what mypyc needs for the compiled build.

``EDGEAUTH_MYPYC=1 pip install .`` (or ``pip wheel .``) builds the request
path as C extensions with mypyc (setup.py). mypyc compiles from the types
mypy infers, so the build environment then holds mypy and every package the
compiled modules' imports reach (the dependencies and the server and redis
extras), which this backend asks for. Any other build is pure Python and
needs only setuptools.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the PEP 517 hooks, unchanged)

# The mypyc that compiled a build is part of what was tested: keep this range
# the same as the one the tests install (pyproject.toml, extra "test").
MYPYC = "mypy>=2.4,<3"


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    if os.environ.get("EDGEAUTH_MYPYC") != "1":
        return build_meta.get_requires_for_build_wheel(config_settings)
    # setup.py imports mypyc before anything else: it has no setup_requires to add.
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return [MYPYC, *project["dependencies"], *extras["server"], *extras["redis"]]
