"""The demo app as a process of its own: ``python -m edgeauth.demo.upstream --fd N``.

``edgeauth demo`` starts it on a socket it has already bound (file descriptor
``N``) and passes the session secret in ``EDGEAUTH_DEMO_SESSION_SECRET``.
The app stops on SIGTERM, and by itself when the process that started it
goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import uvicorn

from .app import create_app
from .runner import AUDIENCE, ISSUER, SECRET_VAR

__all__ = ["main"]


async def _serve(server: uvicorn.Server, sock: socket.socket, parent: int) -> None:
    async def watch_parent() -> None:
        while not server.should_exit:
            if os.getppid() != parent:  # re-parented: the demo is gone
                server.should_exit = True
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_parent())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> None:
    """Serve the demo app on the inherited socket until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m edgeauth.demo.upstream")
    parser.add_argument("--fd", type=int, required=True, help="a bound, listening TCP socket")
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_VAR)
    if not secret:
        sys.exit(f"{SECRET_VAR} is not set")
    app = create_app(session_secret=secret.encode(), issuer=ISSUER, audience=AUDIENCE)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    sock = socket.socket(fileno=args.fd)
    # uvicorn re-raises the signal that stopped it once it has shut down; a
    # handler that does nothing lets the process end normally (exit code 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    asyncio.run(_serve(uvicorn.Server(config), sock, os.getppid()))


if __name__ == "__main__":
    main()
