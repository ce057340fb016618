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
    if os.name == "posix":
        # The compiled modules are one shared object that exports nothing but its
        # init (the modules reach it through capsules): its functions then call
        # each other directly, not through the PLT, and may be inlined.
        # (mypycify gives every extension the same list of flags: each gets its own.)
        for ext in ext_modules:
            ext.extra_compile_args = [*ext.extra_compile_args, "-fvisibility=hidden"]

setup(ext_modules=ext_modules)
