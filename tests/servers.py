"""Real processes for the wire tests: ``edgeauth serve`` and upstream apps.

Everything binds 127.0.0.1 (and ::1 for an untrusted client) on ephemeral
ports, every wait is a bounded poll, and every process started here is
stopped by the context manager that started it.

The upstream apps run as ``python -m tests.servers KIND --port N``:

- ``echo``: answers with what it received as JSON, records every request
  (``GET /__log`` on the upstream itself returns and clears the record), and
  by the last path segment: ``slow`` (sleeps ``?s=`` seconds), ``download``
  (streams ``?n=`` bytes), ``upload`` (counts the body), ``hop`` (answers with
  hop-by-hop headers), ``broken`` (fails mid-response), WebSocket: echo,
  ``close CODE REASON`` closes, ``vanish`` drops the connection;
- ``raw``: a socket server that answers with the exact request head it read;
- ``page``: a blank HTML page (a second origin for the browser test);
- ``edgeauth --config FILE --port N``: ``edgeauth.server.serve`` on
  127.0.0.1:N and [::1]:N at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .helpers import Response

ROOT = Path(__file__).resolve().parents[1]
EDGEAUTH = str(Path(sys.executable).with_name("edgeauth"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
POLL = 15.0


def poll(condition: Any, what: str) -> None:
    """Wait (bounded) until ``condition()`` is true."""
    deadline = time.monotonic() + POLL
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def audit_events(process: Process, request_id: str | None) -> list[dict[str, Any]]:
    """The audit events with ``request_id`` in ``process``'s log, once there
    is one: the line can arrive after the answer it belongs to."""
    needle = f'"request_id":"{request_id}"'
    poll(lambda: needle in process.output(), "the audit line")
    return [json.loads(line) for line in process.output().splitlines() if needle in line]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """A started process and where it listens."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait (bounded), kill if needed; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)


def wait_until_listening(process: Process, host: str = "127.0.0.1") -> None:
    """Poll until ``host:port`` accepts connections; fail if the process ends first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"process exited early:\n{process.output()}")
        try:
            with socket.create_connection((host, process.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"process did not listen in time:\n{process.output()}")


@contextlib.contextmanager
def running(
    args: list[str], port: int, log: Path, *, env: dict[str, str] | None = None
) -> Iterator[Process]:
    """Start ``args``, wait until it listens on ``port``, and always stop it."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    process = Process(popen, port, log)
    try:
        wait_until_listening(process)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def upstream(kind: str, folder: Path) -> Iterator[Process]:
    """One of this module's upstream apps as a process."""
    port = free_port()
    args = [sys.executable, "-m", "tests.servers", kind, "--port", str(port)]
    with running(args, port, folder / f"upstream-{kind}-{port}.log") as process:
        yield process


@contextlib.contextmanager
def edgeauth(
    policy: Path, port: int, *, workers: int | None = None, dual_stack: bool = False
) -> Iterator[Process]:
    """``edgeauth serve --config POLICY`` (the policy listens on ``port``).

    With ``dual_stack`` it is served on 127.0.0.1 and ::1 (same port) through
    ``edgeauth.server.serve``, so a test has a trusted and an untrusted peer.
    """
    if dual_stack:
        args = [sys.executable, "-m", "tests.servers", "edgeauth", "--config", str(policy)]
        args += ["--port", str(port)]
    else:
        args = [EDGEAUTH, "serve", "--config", str(policy)]
    if workers is not None:
        args += ["--workers", str(workers)]
    with running(args, port, policy.with_suffix(f".{port}.log")) as process:
        if dual_stack:
            wait_until_listening(process, "::1")
        yield process


def server_section(port: int, upstream: str | None, **settings: Any) -> str:
    """A ``[server]`` section listening on 127.0.0.1:``port``."""
    lines = ["[server]", f'listen = "127.0.0.1:{port}"']
    if upstream is not None:
        lines.append(f'upstream = "{upstream}"')
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n\n"


def upstream_log(process: Process) -> list[dict[str, Any]]:
    """The requests the echo upstream received since the last call."""
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
        s.sendall(b"GET /__log HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return list(json.loads(body))


def read_all(sock: socket.socket) -> bytes:
    """Read until the peer closes (bounded by the socket timeout)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def raw_exchange(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[bytes, bool]:
    """Send ``request`` bytes as they are; (everything answered, whether the
    server closed the connection)."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
        except TimeoutError:
            return b"".join(chunks), False


def request(
    port: int,
    method: str,
    target: bytes,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    host: str = "127.0.0.1",
) -> Response:
    """One HTTP/1.1 request on its own connection, the target sent byte for byte.

    The body goes with a Content-Length, or chunked when ``headers`` say
    ``transfer-encoding: chunked``.
    """
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [f"{n}: {v}".encode("latin-1") for n, v in headers]
    names = {n.lower() for n, _ in headers}
    if "transfer-encoding" in names:
        payload = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        payload = body
        if "content-length" not in names and (body or method in ("POST", "PUT", "PATCH")):
            lines.append(b"content-length: " + str(len(body)).encode())
    lines.append(b"connection: close")
    data, _ = raw_exchange(port, b"\r\n".join(lines) + b"\r\n\r\n" + payload, host)
    return parse_response(data)


def parse_response(data: bytes) -> Response:
    """Parse one HTTP/1.1 response (Content-Length, chunked or until close)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = [(n.strip().lower(), v.strip()) for n, _, v in (f.partition(":") for f in fields)]
    response = Response(int(status_line.split()[1]), headers, b"")
    if response.header("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        response.body = body
    elif response.header("content-length") is not None:
        response.body = rest[: int(response.header("content-length") or 0)]
    else:
        response.body = rest
    return response


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current resident set, its peak) of ``pid`` in bytes, from /proc."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# --- the upstream apps ------------------------------------------------------------

_LOG: list[dict[str, Any]] = []
_CHUNK = 64 * 1024


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    raw_path = scope["raw_path"].decode("latin-1")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if raw_path == "/__log":
        body = json.dumps(_LOG).encode()
        _LOG.clear()
        await _respond(send, 200, [(b"content-type", b"application/json")], body)
        return
    record = {
        "type": scope["type"],
        "method": scope.get("method", "GET"),
        "raw_path": raw_path,
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "client": scope["client"][0] if scope.get("client") else None,
    }
    _LOG.append(record)
    action = raw_path.rstrip("/").rpartition("/")[2]
    if scope["type"] == "websocket":
        await _ws_echo(scope, receive, send)
        return
    if action == "download":
        await _download(int(query.get("n", ["0"])[0]), receive, send)
        return
    if action == "broken":
        # Starts a chunked response, then fails: the body is cut short.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("upstream failed mid-response (on purpose)")
    length = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if action == "slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
    headers = [
        (b"content-type", b"application/json"),
        (b"access-control-allow-origin", b"*"),
        (b"x-upstream", b"echo"),
    ]
    if action == "hop":
        headers += [
            (b"connection", b"x-hop-secret"),
            (b"x-hop-secret", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
            (b"upgrade", b"h2c"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/"),
        ]
    body = json.dumps({**record, "body_length": length}).encode()
    await _respond(send, 200, headers, body)


async def _download(size: int, receive: Any, send: Any) -> None:
    """Stream ``size`` bytes; record it when the peer goes away before the end."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    headers = [(b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    block = b"x" * _CHUNK
    while size > 0 and not gone.is_set():
        part = block[: min(size, _CHUNK)]
        size -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": size > 0})
        await asyncio.sleep(0)  # a send after a disconnect returns at once: let watch() run
    watcher.cancel()
    if size > 0:
        _LOG.append({"type": "download-aborted"})


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _ws_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _LOG.append({"type": "ws-closed", "code": message.get("code")})
            return
        text = message.get("text")
        if text == "vanish":
            raise RuntimeError("upstream dropped the WebSocket (on purpose)")
        if text is not None and text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            return
        if text is not None:
            headers = dict((n.decode(), v.decode()) for n, v in scope["headers"])
            reply = json.dumps({"text": text, "user": headers.get("x-user-id")})
            await send({"type": "websocket.send", "text": reply})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b"<!doctype html><html><head><title>other origin</title></head><body></body></html>"
    await _respond(send, 200, [(b"content-type", b"text/html; charset=utf-8")], body)


async def _raw(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        body = json.dumps({"head": head.decode("latin-1")}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def _serve_edgeauth(config: str, port: int, workers: int | None) -> None:
    from edgeauth.server import serve

    sockets = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sockets.append(sock)
    serve(config, sockets=sockets, workers=workers, graceful_timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers")
    parser.add_argument("kind", choices=["echo", "raw", "page", "edgeauth"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    if args.kind == "raw":
        asyncio.run(_raw(args.port))
        return
    if args.kind == "edgeauth":
        _serve_edgeauth(args.config, args.port, args.workers)
        return
    import uvicorn

    app = _echo if args.kind == "echo" else _page
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="auto",
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
