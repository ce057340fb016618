"""All attack classes in one table, in the order the runners put them."""

from __future__ import annotations

from . import (
    cases_cookies,
    cases_cors,
    cases_exhaustion,
    cases_headers,
    cases_jwt,
    cases_leakage,
    cases_methods,
    cases_paths,
    cases_redirect,
)
from .common import Attack

CLASSES: dict[str, tuple[Attack, ...]] = {
    "paths": cases_paths.CASES,
    "headers": cases_headers.CASES,
    "jwt": cases_jwt.CASES,
    "cookies": cases_cookies.CASES,
    "redirect": cases_redirect.CASES,
    "cors": cases_cors.CASES,
    "methods": cases_methods.CASES,
    "exhaustion": cases_exhaustion.CASES,
    "leakage": cases_leakage.CASES,
}
ALL: tuple[Attack, ...] = tuple(case for cases in CLASSES.values() for case in cases)


def case_id(case: Attack) -> str:
    """The test id of a case."""
    return case.id
