"""Forward-auth test plumbing: the test policy, an echo upstream, servers on
ephemeral 127.0.0.1 ports, and nginx / Caddy run from the docs/deploy files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from .helpers import SEED_POLICY

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"

# The addresses the docs files are written with; tests substitute ephemeral ports.
GATEWAY_ADDRESS = "127.0.0.1:8000"
EDGEAUTH_ADDRESS = "127.0.0.1:9000"
APP_ADDRESS = "127.0.0.1:3000"

# Rules added in front of the seed policy's: a WebSocket route, a scope check,
# and a page rule that denies with a page (not a redirect).
EXTRA_RULES = """
[[rules]]
id = "ws"
match = "/ws/**"
authenticate = ["session"]

[[rules]]
id = "reports"
match = "/api/reports/**"
authenticate = ["keys"]
require.scopes = ["reports:write"]

[[rules]]
id = "dashboard-admin"
match = "/dashboard/admin/**"
kind = "page"
authenticate = ["session"]
require.roles = ["admin"]
login_url = "/login"

[[rules]]
id = "once"
match = "/api/once/**"
public = true
rate_limit = "1/hour per ip"

[[rules]]
id = "rated"
match = "/api/limited/**"
public = true
rate_limit = "1000/second per ip"
"""


def forward_auth_policy(dialect: str, trusted: str = '"127.0.0.1"') -> str:
    """The seed policy with the extra rules and a ``[forward_auth]`` section."""
    text = SEED_POLICY.replace("[[rules]]", EXTRA_RULES + "\n[[rules]]", 1)
    return text + f'\n[forward_auth]\ndialect = "{dialect}"\ntrusted = [{trusted}]\n'


# Echo upstream ------------------------------------------------------------


@dataclass
class EchoApp:
    """An ASGI app that answers with the request it received, as JSON, and
    keeps a log of them (HTTP and WebSocket)."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        record = {
            "type": scope["type"],
            "method": scope.get("method", "GET"),
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        }
        self.seen.append(record)
        data = json.dumps(record)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": data})
            await send({"type": "websocket.close", "code": 1000})
            return
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"access-control-allow-origin", b"*"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data.encode()})


def received(record: dict[str, Any], name: str) -> list[str]:
    """Every value of header ``name`` in an echoed request, any spelling of the name."""
    wanted = name.lower().replace("_", "-")
    return [v for n, v in record["headers"] if n.lower().replace("_", "-") == wanted]


# Processes and servers ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until 127.0.0.1:port accepts connections (bounded)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def serve(app: Any, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Iterator[int]:
    """Run an ASGI app under uvicorn in a thread, on one ephemeral port shared by
    ``hosts``; yields the port. Proxy headers stay off: the TCP peer is the peer."""
    sockets: list[socket.socket] = []
    port = 0
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sockets.append(sock)
    config = uvicorn.Config(
        app,
        lifespan="off",
        proxy_headers=False,
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        for sock in sockets:
            sock.close()


def deploy_file(name: str, gateway: int, edgeauth: int, app: int) -> str:
    """A docs/deploy file with its documented addresses replaced by test ports."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    for documented, port in (
        (GATEWAY_ADDRESS, gateway),
        (EDGEAUTH_ADDRESS, edgeauth),
        (APP_ADDRESS, app),
    ):
        if documented not in text:
            raise AssertionError(f"{name} no longer names {documented}")
        text = text.replace(documented, f"127.0.0.1:{port}")
    return text


def _started(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        wait_for_port(port, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{log.read_text(errors='replace')}") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def run_nginx(edgeauth: int, app: int) -> Iterator[int]:
    """Debian's nginx with docs/deploy/nginx.conf included in a minimal main
    config; every path under a temp prefix. Yields the listening port."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = Path(tempfile.mkdtemp(prefix="edgeauth-nginx-"))
    # nginx workers run as "nobody" when the tests run as root: they must be
    # able to reach the temp paths nginx creates for them.
    prefix.chmod(0o755)
    port = free_port()
    (prefix / "edgeauth.conf").write_text(deploy_file("nginx.conf", port, edgeauth, app))
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"{temp}\n"
        "    access_log off;\n"
        f"    include {prefix / 'edgeauth.conf'};\n"
        "}\n"
    )
    log = (prefix / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            "-e",
            "stderr",
            "-g",
            f"daemon off; pid {prefix / 'nginx.pid'}; error_log stderr;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        _started(port, proc, prefix / "stderr.log")
        yield port
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(prefix, ignore_errors=True)


@contextmanager
def run_caddy(edgeauth: int, app: int) -> Iterator[int]:
    """Debian's caddy running docs/deploy/Caddyfile, its storage in a temp dir.
    Yields the listening port."""
    exe = shutil.which("caddy") or "/usr/bin/caddy"
    home = Path(tempfile.mkdtemp(prefix="edgeauth-caddy-"))
    port = free_port()
    config = home / "Caddyfile"
    config.write_text(deploy_file("Caddyfile", port, edgeauth, app))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    log = (home / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [exe, "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    try:
        _started(port, proc, home / "stderr.log")
        yield port
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
