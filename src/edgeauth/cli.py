"""The ``edgeauth`` command: check a policy, make API keys, serve, run the demo."""

from __future__ import annotations

import sys
from datetime import datetime

try:
    import click
except ImportError:  # pragma: no cover - the core install has no CLI dependencies
    click = None  # type: ignore[assignment]

from . import __version__
from .config import load_policy
from .errors import ConfigError

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``edgeauth`` console script."""
    if click is None:  # pragma: no cover
        sys.exit(
            "edgeauth: the command line needs the server extra: pip install 'edgeauth[server]'"
        )
    cli()


if click is not None:

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="edgeauth")
    def cli() -> None:
        """edgeauth: one auth policy, enforced at the edge of any web app."""

    @cli.command()
    @click.argument("policy", type=click.Path(dir_okay=False))
    def check(policy: str) -> None:
        """Validate POLICY; print every error, or a one-line summary."""
        try:
            loaded = load_policy(policy)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
        default = "allow" if loaded.default_allow else "deny"
        rules, authn = len(loaded.rules), len(loaded.authenticators)
        click.echo(f"{policy}: OK: {rules} rules, {authn} authenticators, default {default}")

    @cli.group()
    def keys() -> None:
        """Manage API keys (the keys file holds SHA-256 digests only)."""

    @keys.command("new")
    @click.option("--subject", required=True, help="Who the key acts as (x-user-id).")
    @click.option("--roles", default="", help="Comma-separated roles.")
    @click.option("--scopes", default="", help="Comma-separated scopes.")
    @click.option(
        "--id", "key_id", default=None, help="Key id shown in logs (default: SUBJECT-random)."
    )
    @click.option(
        "--expires",
        default=None,
        help="Expiry, ISO 8601 with a time zone, e.g. 2027-01-01T00:00:00Z.",
    )
    def keys_new(
        subject: str, roles: str, scopes: str, key_id: str | None, expires: str | None
    ) -> None:
        """Print a new random API key once, and the entry to paste into the keys file."""
        from .authn.apikey import new_key

        when = None
        if expires is not None:
            try:
                when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
            except ValueError:
                raise click.BadParameter(
                    "expected ISO 8601, e.g. 2027-01-01T00:00:00Z", param_hint="--expires"
                ) from None
            if when.tzinfo is None:
                raise click.BadParameter(
                    "needs a time zone, e.g. ...Z or +02:00", param_hint="--expires"
                )
        try:
            key, entry = new_key(
                subject=subject,
                roles=_split(roles),
                scopes=_split(scopes),
                key_id=key_id,
                expires=when,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo("API key (shown once, store it now; edgeauth keeps only its hash):", err=True)
        click.echo(key)
        click.echo("\nAdd this entry to the keys file:", err=True)
        click.echo(entry)

    @cli.command()
    @click.option(
        "--config",
        "config",
        required=True,
        type=click.Path(dir_okay=False),
        help="The policy file, with its [server] section.",
    )
    @click.option(
        "--workers",
        default=None,
        type=click.IntRange(1, 64),
        help="Worker processes (default: [server] workers).",
    )
    def serve(config: str, workers: int | None) -> None:
        """Run the reverse proxy (and forward-auth endpoint) of a policy until SIGTERM."""
        from .server import serve as run_server

        try:
            run_server(config, workers=workers)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)

    @cli.command()
    @click.option("--config", "config", required=True, type=click.Path(dir_okay=False))
    @click.option("--jti", default=None, help="Revoke the token with this jti.")
    @click.option("--subject", default=None, help="Revoke every credential of this subject.")
    @click.option(
        "--before",
        default=None,
        help="With --subject: only tokens issued before this time (ISO 8601 or epoch "
        "seconds; default: now). Sign out everywhere.",
    )
    @click.option(
        "--expires",
        default=None,
        help="When the entry may be forgotten: the token's exp for --jti (default: 30 days).",
    )
    @click.option("--lift", is_flag=True, help="Lift the revocation instead.")
    def revoke(
        config: str,
        jti: str | None,
        subject: str | None,
        before: str | None,
        expires: str | None,
        lift: bool,
    ) -> None:
        """Revoke a token (--jti) or a subject's credentials (--subject) on every instance."""
        import asyncio

        from .errors import StoreUnavailable
        from .revocation import parse_time, revoke, unrevoke

        if (jti is None) == (subject is None):
            raise click.UsageError("give exactly one of --jti and --subject")
        try:
            when = parse_time(before) if before else None
            until = parse_time(expires) if expires else None
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            loaded = load_policy(config)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)

        async def run() -> None:
            try:
                if lift:
                    await unrevoke(loaded, jti=jti, subject=subject)
                else:
                    await revoke(loaded, jti=jti, subject=subject, before=when, expires_at=until)
            finally:
                await loaded.aclose()

        try:
            asyncio.run(run())
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except StoreUnavailable as exc:
            click.echo(f"edgeauth: cannot write the revocation: {exc}", err=True)
            sys.exit(1)
        what = f"jti {jti}" if jti is not None else f"subject {subject}"
        click.echo(f"{'lifted' if lift else 'revoked'}: {what}")

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option(
        "--port",
        default=8080,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Port to listen on; 0 picks a free one.",
    )
    @click.option(
        "--cors-origin",
        "cors_origins",
        multiple=True,
        help="Origin allowed to call /api/protected/** with credentials "
        "(repeatable; default http://127.0.0.1:PORT+1).",
    )
    def demo(host: str, port: int, cors_origins: tuple[str, ...]) -> None:
        """Run the example app behind edgeauth, with demo users and keys."""
        from .demo.runner import run_demo

        run_demo(host=host, port=port, cors_origins=cors_origins or None)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
