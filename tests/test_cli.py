"""The edgeauth command: check, keys new, demo set-up."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from click.testing import CliRunner

from edgeauth import EdgeAuth, load_policy
from edgeauth.authn.apikey import load_keys_file
from edgeauth.cli import cli
from edgeauth.demo.app import create_app
from edgeauth.demo.runner import AUDIENCE, ISSUER, SECRET_VAR, _banner, prepare_demo

from .helpers import write_policy


def test_check_prints_a_summary_for_a_good_policy(tmp_path: Path) -> None:
    """edgeauth check exits 0 with a one-line summary."""
    path = write_policy(tmp_path)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{path}: OK: 6 rules, 2 authenticators, default deny"


def test_check_prints_every_error_and_fails(tmp_path: Path) -> None:
    """edgeauth check lists every error with file, line and key, and exits non-zero."""
    path = write_policy(
        tmp_path, '[[rules]]\nmatch = "x"\n\n[[rules]]\nmatch = "/y"\nkind = "pg"\npublic = true\n'
    )
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: 3 errors" in result.output
    assert "line 2: rules[0].match: a path pattern must start with '/'" in result.output
    assert "line 1: rules[0]: a rule needs authenticate = [...] or public = true" in result.output
    assert "line 6: rules[1].kind: expected 'api', 'page' or 'auto'" in result.output


def test_keys_new_prints_a_key_once_and_an_entry_that_loads(tmp_path: Path) -> None:
    """keys new prints a fresh key and the [[keys]] entry holding only its hash."""
    result = CliRunner().invoke(
        cli, ["keys", "new", "--subject", "svc", "--roles", "a,b", "--scopes", "r:read"]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.splitlines()[0]
    entry = "\n".join(result.stdout.splitlines()[1:])
    assert key.startswith("eak_")
    assert key not in entry
    assert hashlib.sha256(key.encode()).hexdigest() in entry
    (tmp_path / "keys.toml").write_text(entry, encoding="utf-8")
    found = load_keys_file(tmp_path / "keys.toml").lookup(key)
    assert found is not None
    assert (found.subject, found.roles, found.scopes) == ("svc", ("a", "b"), ("r:read",))


def test_keys_new_rejects_bad_input() -> None:
    """A naive expiry or a bad role is a usage error, not a traceback."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["keys", "new", "--subject", "s", "--expires", "2027-01-01T00:00:00"]
    )
    assert result.exit_code == 2
    assert "time zone" in result.output
    result = runner.invoke(cli, ["keys", "new", "--subject", "s", "--expires", "soon"])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["keys", "new", "--subject", "s\x01"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


async def test_demo_setup_serves_the_seed_behaviours(tmp_path: Path, monkeypatch: object) -> None:
    """The demo's policy, keys and tokens give the 200, 401, 403 and redirect its banner promises."""
    setup = prepare_demo(tmp_path)
    policy = load_policy(setup.policy_file, environ={SECRET_VAR: setup.session_secret})
    app = EdgeAuth(
        create_app(session_secret=setup.session_secret.encode(), issuer=ISSUER, audience=AUDIENCE),
        policy,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080"
    ) as c:
        assert (
            await c.get("/api/v1/reports", headers={"x-api-key": setup.api_key})
        ).status_code == 200
        r = await c.get(
            "/api/v1/reports", headers={"authorization": f"Bearer {setup.partner_token}"}
        )
        assert r.status_code == 200
        assert r.json()["caller"] == "partner-app"
        assert (await c.get("/api/protected/me")).status_code == 401
        r = await c.get("/api/admin/users", headers={"cookie": f"session={setup.alice_session}"})
        assert r.status_code == 403
        r = await c.get("/dashboard")
        assert r.status_code == 302
        assert r.headers["location"] == "/login?next=%2Fdashboard"
        r = await c.post("/api/login", json={"username": "admin", "password": "admin-pass"})
        assert r.status_code == 200
        session = r.cookies["session"]
        r = await c.get("/api/admin/users", headers={"cookie": f"session={session}"})
        assert r.status_code == 200
        r = await c.get("/", headers={"cookie": f"session={session}"})
        assert r.status_code == 200
        assert "admin" in r.text
    banner = _banner(setup, "http://127.0.0.1:8080")
    assert setup.api_key in banner and "alice" in banner


async def test_revoke_command_takes_effect_without_redis(tmp_path: Path) -> None:
    """edgeauth revoke --subject writes the revocation file; the next request with that subject is 401 revoked."""
    import asyncio

    from edgeauth import EdgeAuth

    from .helpers import call, echo_app, session_token

    path = write_policy(tmp_path)
    token = session_token("mallory")
    app = EdgeAuth(echo_app, policy=load_policy(path))
    assert (
        await call(app, raw_path=b"/api/protected/x", headers=[("cookie", f"session={token}")])
    ).status == 200
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["revoke", "--config", str(path), "--subject", "mallory"]
    )
    assert result.exit_code == 0, result.output
    assert "revoked: subject mallory" in result.output
    fresh = EdgeAuth(echo_app, policy=load_policy(path))  # another worker, or after a restart
    r = await call(fresh, raw_path=b"/api/protected/x", headers=[("cookie", f"session={token}")])
    assert r.status == 401
    assert r.json()["code"] == "revoked"
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["revoke", "--config", str(path), "--subject", "mallory", "--lift"]
    )
    assert result.exit_code == 0
    r = await call(
        EdgeAuth(echo_app, policy=load_policy(path)),
        raw_path=b"/api/protected/x",
        headers=[("cookie", f"session={token}")],
    )
    assert r.status == 200


def test_revoke_command_usage_errors(tmp_path: Path) -> None:
    """revoke needs exactly one of --jti and --subject, and readable times."""
    path = write_policy(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["revoke", "--config", str(path)]).exit_code == 2
    assert (
        runner.invoke(
            cli, ["revoke", "--config", str(path), "--jti", "a", "--subject", "b"]
        ).exit_code
        == 2
    )
    result = runner.invoke(
        cli, ["revoke", "--config", str(path), "--subject", "b", "--before", "yesterday"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
