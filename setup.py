"""Builds edgeauth; with EDGEAUTH_MYPYC=1, its request path is compiled by mypyc.

The package's metadata is in pyproject.toml, and so is the list of compiled
modules ([tool.edgeauth.mypyc]). Without EDGEAUTH_MYPYC=1 the build is pure
Python.
"""

import os
import tomllib
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("EDGEAUTH_MYPYC") == "1":
    from mypyc.build import mypycify

    here = Path(__file__).parent
    project = tomllib.loads((here / "pyproject.toml").read_text(encoding="utf-8"))
    modules = project["tool"]["edgeauth"]["mypyc"]["modules"]
    ext_modules = mypycify(
        ["--config-file", str(here / "pyproject.toml"), *(f"src/{m}" for m in modules)]
    )

setup(ext_modules=ext_modules)
