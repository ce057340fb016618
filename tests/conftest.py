"""Session checks shared by every test run."""

from __future__ import annotations

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to run against another build than EDGEAUTH_TEST_BUILD names
    (scripts/test's second run tests the compiled build), whatever tests a
    run selects."""
    from .test_build import wrong_build

    problem = wrong_build()
    if problem is not None:
        raise pytest.UsageError(f"edgeauth build: {problem}")
