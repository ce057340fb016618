"""The attack tables themselves: many cases per class, each citing its source."""

from __future__ import annotations

import re

from . import cases_ssrf
from .common import DIALECTS, FRONTENDS, Attack
from .table import ALL, CLASSES

# A citation: an advisory, an RFC or CWE, a standard, or named published research.
CITATION = re.compile(
    r"CVE-\d{4}-\d{4,}|GHSA-\w{4}-\w{4}-\w{4}|RFC \d{3,4}|CWE-\d+|OWASP|PortSwigger|Kettle"
    r"|Tsai|Birch|McLean|WHATWG|Fetch standard|Fetch Metadata|W3C|OpenID Connect|docs/policy\.md"
    r"|Django docs|oauth2-proxy|Watchfire|Grossman|Miller|sozu|GitHub|Slowloris"
)
KNOWN_FRONTENDS = {*FRONTENDS, *(f"forward_auth:{d}" for d in DIALECTS)}


def every_case() -> list[Attack]:
    return [*ALL, *cases_ssrf.cases("http://127.0.0.1:1")]


def test_every_case_cites_its_source() -> None:
    """Each case names the CVE, advisory, RFC section or research it reproduces."""
    missing = [case.id for case in every_case() if not CITATION.search(case.source)]
    assert missing == []


def test_case_ids_are_unique() -> None:
    """Case ids name one case each, across every class."""
    ids = [case.id for case in every_case()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_class_has_many_cases() -> None:
    """No attack class is a token example."""
    sizes = {name: len(cases) for name, cases in CLASSES.items()}
    sizes["ssrf"] = len(cases_ssrf.cases("http://127.0.0.1:1"))
    assert all(size >= 9 for size in sizes.values()), sizes


def test_front_end_expectations_name_real_front_ends() -> None:
    """A per-front-end expectation is for a front-end the runners know."""
    unknown = {
        (case.id, key) for case in every_case() for key in case.on if key not in KNOWN_FRONTENDS
    }
    assert unknown == set()
