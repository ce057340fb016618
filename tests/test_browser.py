"""A real browser (Debian's chromium, driven by Playwright) against ``edgeauth demo``.

No browser is downloaded: Playwright drives the system ``chromium`` that
scripts/test installs.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from . import servers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Runs in the page: fetch with the session cookie, report status and body or the
# browser's refusal.
FETCH = """async ([url, preflight]) => {
  const headers = preflight ? {"Content-Type": "application/json"} : {};
  try {
    const r = await fetch(url, {credentials: "include", headers});
    return {status: r.status, redirected: r.redirected, body: await r.text()};
  } catch (error) {
    return {error: String(error)};
  }
}"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The demo, a page on a listed second origin, and one on an unlisted origin."""
    folder = tmp_path_factory.mktemp("browser")
    with servers.upstream("page", folder) as listed, servers.upstream("page", folder) as unlisted:
        port = servers.free_port()
        log = folder / "demo.log"
        args = [servers.EDGEAUTH, "demo", "--port", str(port), "--cors-origin", listed.url]
        with log.open("wb") as out:
            popen = subprocess.Popen(args, cwd=servers.ROOT, stdout=out, stderr=subprocess.STDOUT)
        demo = servers.Process(popen, port, log)
        try:
            servers.wait_until_listening(demo)
            yield {"demo": demo.url, "listed": listed.url, "unlisted": unlisted.url}
        finally:
            assert demo.stop(signal.SIGINT) == 0, demo.output()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def fetch(page: Page, url: str, *, preflight: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(FETCH, [url, preflight])
    return result


def test_sign_in_fetch_cors_and_sign_out(browser: Browser, sites: dict[str, str]) -> None:
    """Login redirect and return, the identity on fetch, CORS by origin, and a 401 JSON after sign-out."""
    base = sites["demo"]
    me = f"{base}/api/protected/me"
    context = browser.new_context()
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        # A page rule sends the browser to sign in, with the way back.
        page.goto(f"{base}/dashboard")
        assert page.url == f"{base}/login?next=%2Fdashboard"
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "alice-pass")
        page.click("button")
        page.wait_for_url(f"{base}/dashboard")
        assert "alice" in page.text_content("body")

        # The dashboard's own fetch carries the session cookie: 200 with the identity.
        page.click("#call")
        # (Polled by Playwright's own script: the page's CSP forbids a string
        # predicate, which wait_for_function evaluates when the first try fails.)
        expect(page.locator("#out")).to_have_text(re.compile(r"^200\b"), timeout=15_000)
        answer = page.text_content("#out")
        assert json.loads(answer.partition("\n")[2]) == {"user_id": "alice", "roles": ["user"]}

        # A listed second origin may call the CORS rule with credentials (simple and
        # preflighted requests); an unlisted one is refused by the browser.
        other = context.new_page()
        other.goto(sites["listed"])
        for preflight in (False, True):
            result = fetch(other, me, preflight=preflight)
            assert result.get("status") == 200, result
            assert json.loads(result["body"])["user_id"] == "alice"
        other.goto(sites["unlisted"])
        for preflight in (False, True):
            result = fetch(other, me, preflight=preflight)
            assert "error" in result and "Failed to fetch" in result["error"], result

        # After sign-out the same fetch gets the API's 401 JSON, not a login redirect.
        page.click("text=Sign out")
        page.wait_for_url(f"{base}/")
        result = fetch(page, "/api/protected/me")
        assert result["status"] == 401 and not result["redirected"]
        assert json.loads(result["body"])["code"] == "missing_credentials"
    finally:
        context.close()
