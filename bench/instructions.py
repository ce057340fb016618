"""Instructions per request, counted by valgrind: a measure that does not move.

Requests per second on a shared virtual machine move by tens of percent from
one minute to the next, so a change that saves 5% cannot be seen in them. This
script counts the machine instructions the interpreter executes per request,
which is the same from run to run (to a few instructions), for the raw ASGI app
and for the same app behind ``EdgeAuth`` or the forward-auth endpoint, called
in process with a prebuilt scope and no sockets. It complements
``./scripts/bench``: instructions are not time (cache misses, system calls and
the server's own work are not in them), but fewer instructions on the same
path is less time.

Run it as ``./scripts/bench-instructions [scenario ...]`` (installs valgrind if
missing). Scenarios: public, cookie, bearer, denied, browser (a cached cookie
with the dozen headers a browser sends), forward_auth (nginx dialect, cached
cookie). It takes a minute or two: valgrind runs the interpreter about 50
times slower. ``--compare PATH`` counts the ``edgeauth`` package under PATH (a
``src`` folder, e.g. of a ``git worktree`` of another commit) in the same way,
next to the working tree's.

``--servers`` counts whole server processes instead, sockets and event loop
included (the kernel's part is not in any count): the raw app under uvicorn
(uvloop, httptools), and ``edgeauth serve`` answering forward-auth requests
with a cached cookie, each sent ``--requests`` requests over four keep-alive
connections after a warm-up, with callgrind counting only while they are
answered. This is the path the decision endpoint's benchmark target is about.
Then the middleware's two paths under uvicorn, each beside what it is
compared with: the raw app and the middleware sent a cached cookie, and the
raw app answering and auditing the denial with nothing decided
(``bench.apps:audited_denial_app``) and the middleware denying a request
without a credential. These are sent their requests 16 connections at a
time, as wrk's 32 do, so that an event-loop turn answers several and the
audit lines of a turn go out in one write.

``--cache`` adds callgrind's cache simulation to ``--servers``: the first
level's instruction and data read misses per request, which instructions do
not show (this virtual machine exposes no hardware counters). The simulated
caches are the host's sizes; the counts compare servers, not predict time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("public", "cookie", "bearer", "denied", "browser", "forward_auth")
BROWSER = [
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"),
    (b"accept", b"application/json"),
    (b"accept-language", b"en-US,en;q=0.9"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"referer", b"http://127.0.0.1:8000/app"),
    (b"sec-fetch-site", b"same-origin"),
    (b"sec-fetch-mode", b"cors"),
    (b"sec-fetch-dest", b"empty"),
    (b"sec-ch-ua", b'"Chromium";v="120"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Linux"'),
    (b"connection", b"keep-alive"),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenarios", nargs="*", help=f"any of: {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per scenario")
    parser.add_argument(
        "--compare", help="a src folder holding another edgeauth to count alongside"
    )
    parser.add_argument(
        "--servers",
        action="store_true",
        help="count whole server processes (raw app, edgeauth serve forward-auth) instead",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="with --servers: simulate the caches too (first-level misses per request)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    scenarios = list(args.scenarios) or list(SCENARIOS)
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"unknown scenario {', '.join(unknown)}; expected some of {', '.join(SCENARIOS)}"
        )
    if args.child:
        _child(args.child, scenarios, args.requests)
        return 0
    if shutil.which("valgrind") is None:
        print(
            "bench: valgrind is not installed (./scripts/bench-instructions installs it)",
            file=sys.stderr,
        )
        return 2
    builds = [("work", str(ROOT / "src"))]
    if args.compare:
        builds.insert(0, ("compare", str(Path(args.compare).resolve())))
    if args.servers:
        return _count_servers(builds, args.requests, cache=args.cache)
    if args.cache:
        parser.error("--cache counts with --servers only")
    print("instructions per request")
    print(f"{'scenario':14} {'build':8} {'raw app':>9} {'guarded':>9} {'added':>9}")
    for label, src in builds:
        for name, (raw, guarded) in _count(src, scenarios, args.requests).items():
            print(f"{name:14} {label:8} {raw:9,} {guarded:9,} {guarded - raw:9,}")
    return 0


def _count(src: str, scenarios: list[str], requests: int) -> dict[str, tuple[int, int]]:
    """Run the child under callgrind; one profile dump per counted loop."""
    with tempfile.TemporaryDirectory(prefix="edgeauth-ir-") as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind", "--tool=callgrind", "--collect-atstart=no",
            "--toggle-collect=sys_call_tracing", "--dump-after=sys_call_tracing",
            f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", src, "--requests", str(requests), *scenarios,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)  # noqa: S603
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"bench: the counted run failed ({done.returncode})")
        order = re.search(r"^LOOPS (.*)$", done.stdout, re.MULTILINE)
        assert order is not None, done.stdout
        dumps = sorted(
            Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
        )
        counts = [_total(p) for p in dumps]
        loops = order[1].split()
        if len(counts) != len(loops):
            raise SystemExit(f"bench: {len(counts)} profile dumps for {len(loops)} loops")
    per = {loop: round(n / requests) for loop, n in zip(loops, counts, strict=True)}
    return {s: (per[f"{s}:raw"], per[f"{s}:guarded"]) for s in scenarios}


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no total in {dump}")


def _child(src: str, scenarios: list[str], requests: int) -> None:
    """Inside valgrind: build the apps, warm them up, then run each counted
    loop inside ``sys.call_tracing`` (the function callgrind counts within)."""
    sys.path[:0] = [src, str(ROOT)]
    import jwt
    from bench.apps import raw_app
    from bench.run import AUDIENCE, ISSUER, SECRET, write_policy
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    import edgeauth
    from edgeauth.forward_auth import ForwardAuthApp
    from edgeauth.pipeline import Engine

    assert edgeauth.__file__ is not None and edgeauth.__file__.startswith(src), edgeauth.__file__
    work = Path(tempfile.mkdtemp(prefix="edgeauth-ir-work-"))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 7200}
    session = jwt.encode({"sub": "alice", "role": ["user"], **claims}, SECRET, algorithm="HS256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    partner = jwt.encode({"sub": "partner", **claims}, key, algorithm="RS256")
    policy = edgeauth.load_policy(
        write_policy(work, pem, upstream="http://127.0.0.1:9", listen="127.0.0.1:9")
    )
    guarded = edgeauth.EdgeAuth(cast(Any, raw_app), policy=policy)
    decision = ForwardAuthApp(policy, Engine(policy))
    cookie = (b"cookie", b"session=" + session.encode())
    cases: dict[str, tuple[Any, dict[str, Any]]] = {
        "public": (guarded, _scope("/public/x")),
        "cookie": (guarded, _scope("/api/session/x", [cookie])),
        "bearer": (
            guarded,
            _scope("/api/partner/x", [(b"authorization", b"Bearer " + partner.encode())]),
        ),
        "denied": (guarded, _scope("/api/session/x")),
        "browser": (guarded, _scope("/api/session/x", [*BROWSER, cookie])),
        "forward_auth": (
            decision,
            _scope(
                "/_edgeauth/auth",
                [(b"x-original-uri", b"/api/session/x"), (b"x-original-method", b"GET"), cookie],
            ),
        ),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def drive(app: Any, scope: dict[str, Any]) -> None:
        # The apps never wait here (receive and send return at once), so one
        # send() runs a request to its end without an event loop turn.
        coroutine = app(dict(scope), receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        coroutine.close()
        raise SystemExit("bench: a request waited; it cannot be counted in process")

    def loop(app: Any, scope: dict[str, Any]) -> None:
        for _ in range(requests):
            drive(app, scope)

    async def warm() -> None:  # fill the memos and the token cache
        for name in scenarios:
            app, scope = cases[name]
            for _ in range(200):
                await app(dict(scope), receive, send)
                await raw_app(dict(scope), receive, send)

    async def count() -> list[str]:
        # Counted with the event loop running, as in a server: the audit file
        # then gets its lines in batches, after the loop's turn.
        await warm()
        expected = {"denied": 401}
        loops = []
        for name in scenarios:
            app, scope = cases[name]
            for label, target in (("raw", raw_app), ("guarded", app)):
                statuses.clear()
                loops.append(f"{name}:{label}")
                sys.call_tracing(loop, (target, scope))
                await asyncio.sleep(0)  # the audit flush, outside the count
                want = expected.get(name, 200) if label == "guarded" else 200
                assert set(statuses) == {want}, (name, label, set(statuses))
        return loops

    print("LOOPS " + " ".join(asyncio.run(count())), flush=True)


Counts = tuple[int, int, int]  # instructions, first-level instruction and data read misses


def _count_servers(builds: list[tuple[str, str]], requests: int, *, cache: bool = False) -> int:
    """Whole processes under callgrind, counting only while requests are answered."""
    if shutil.which("callgrind_control") is None:
        print("bench: callgrind_control (valgrind) is missing", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    import jwt
    from bench.run import AUDIENCE, ISSUER, SECRET, free_port, write_policy
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    now = int(time.time())
    claims = {"sub": "alice", "role": ["user"], "iss": ISSUER, "aud": AUDIENCE, "exp": now + 7200}
    cookie = "Cookie: session=" + jwt.encode({**claims, "iat": now}, SECRET, algorithm="HS256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    python = str(ROOT / ".venv" / "bin" / "python")
    print("per request, whole server process (kernel not counted)")
    misses = f" {'I1 misses':>10} {'D1 misses':>10}" if cache else ""
    print(f"{'server':36} {'build':8} {'instructions':>12}{misses}")

    def show(server: str, label: str, counts: Counts) -> None:
        more = f" {counts[1]:10,} {counts[2]:10,}" if cache else ""
        print(f"{server:36} {label:8} {counts[0]:12,}{more}", flush=True)

    with tempfile.TemporaryDirectory(prefix="edgeauth-ir-servers-") as tmp:
        work = Path(tmp)
        policy = write_policy(work, pem)  # the middleware's ([audit] file in work)
        env = {
            "PYTHONPATH": str(ROOT),
            "BENCH_POLICY": str(policy),
            "BENCH_AUDIT_FILE": str(work / "audit-floor.log"),
        }

        def uvicorn(app: str, port: int, *, factory: bool = False) -> list[str]:
            return [python, "-m", "uvicorn", app, "--port", str(port), "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log", "--log-level", "warning",
                    *(["--factory"] if factory else [])]  # fmt: skip

        def count(
            argv: list[str],
            port: int,
            build_env: dict[str, str],
            path: str,
            headers: list[str],
            *,
            together: int = 1,
            status: int = 200,
        ) -> Counts:
            return _count_server(
                work, port, argv, {**env, **build_env}, path, headers, requests,
                cache=cache, together=together, status=status,
            )  # fmt: skip

        # The raw app is sent the decision request's very headers: both parse the same bytes.
        asked = ["X-Original-URI: /api/session/x", "X-Original-Method: GET", cookie]
        port = free_port()
        counted = count(uvicorn("bench.apps:raw_app", port), port, {}, "/api/session/x", asked)
        show("raw app (uvicorn)", "-", counted)
        for label, src in builds:
            port = free_port()
            listen = f"127.0.0.1:{port}"
            proxy = write_policy(work, pem, upstream="http://127.0.0.1:9", listen=listen)
            serve = [python, "-c", "from edgeauth.cli import main; main()",
                     "serve", "--config", str(proxy)]  # fmt: skip
            counted = count(serve, port, {"PYTHONPATH": src}, "/_edgeauth/auth", asked)
            show("serve, forward-auth, cached", label, counted)
        # The middleware, each path beside what it is compared with, 16 at a time.
        paths = [  # baseline's name and app, the middleware's path, headers, status
            ("raw app, cookie", "raw_app", "cached cookie", [cookie], 200),
            ("raw app, audited denial", "audited_denial_app", "denied", [], 401),
        ]
        for baseline, app, path_name, headers, status in paths:
            port = free_port()
            counted = count(uvicorn(f"bench.apps:{app}", port), port, {}, "/api/session/x", headers,
                            together=16, status=status)  # fmt: skip
            show(baseline, "-", counted)
            for label, src in builds:
                port = free_port()
                guarded = uvicorn("bench.apps:guarded_app", port, factory=True)
                build = {"PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
                counted = count(guarded, port, build, "/api/session/x", headers,
                                together=16, status=status)  # fmt: skip
                show(f"middleware, {path_name}", label, counted)
    return 0


def _count_server(
    work: Path,
    port: int,
    argv: list[str],
    env: dict[str, str],
    path: str,
    headers: list[str],
    requests: int,
    *,
    cache: bool,
    together: int,
    status: int,
) -> Counts:
    """Instructions (and, with ``cache``, first-level misses) per request of
    the server ``argv`` listening on ``port``, sent ``together`` requests at a
    time on as many connections, each answered ``status``."""
    from bench.run import stop, wait_for_port

    out = work / f"callgrind.{port}"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    if cache:
        valgrind.append("--cache-sim=yes")
    proc = subprocess.Popen(  # noqa: S603
        [*valgrind, f"--callgrind-out-file={out}", *argv],
        env={**os.environ, **env},
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    counted = max(together, requests - requests % together)  # whole turns
    try:
        wait_for_port(port, proc, timeout=300)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        expect = f"HTTP/1.1 {status} ".encode()
        with contextlib.ExitStack() as stack:
            connections = [
                stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=60))
                for _ in range(max(4, together))
            ]
            _exchange(connections, request, 200, together, expect)  # warm-up: memos, token cache
            _instrument(proc.pid, "on")
            _exchange(connections, request, counted, together, expect)
            _instrument(proc.pid, "off")
    finally:
        stop(proc, signal.SIGINT, timeout=120)  # callgrind writes its counts on the way out
    # With instrumentation switched on and off by hand, callgrind's summary line
    # can read 0: the totals line holds the count.
    totals = [0, 0, 0]  # summed over the dumps, each read from its larger line
    for dump in work.glob(f"callgrind.{port}*"):
        text = dump.read_text().splitlines()
        events = next(line.split()[1:] for line in text if line.startswith("events:"))
        largest = [0, 0, 0]
        for line in text:
            if line.startswith(("summary:", "totals:")):
                values = dict(zip(events, map(int, line.split()[1:]), strict=False))
                if values.get("Ir", 0) > largest[0]:
                    largest = [values.get(e, 0) for e in ("Ir", "I1mr", "D1mr")]
        totals = [t + n for t, n in zip(totals, largest, strict=True)]
        dump.unlink()
    return (
        round(totals[0] / counted),
        round(totals[1] / counted),
        round(totals[2] / counted),
    )


def _instrument(pid: int, state: str) -> None:
    control = ["callgrind_control", "--instr", state, str(pid)]
    subprocess.run(control, check=True, capture_output=True, timeout=120)  # noqa: S603


def _exchange(
    connections: list[socket.socket], request: bytes, count: int, together: int, expect: bytes
) -> None:
    """``count`` requests over ``connections``: ``together`` of them sent at once
    (one per connection), then their answers read, each checked to be ``expect``."""
    for first in range(0, count, together):
        turn = [connections[(first + i) % len(connections)] for i in range(together)]
        for connection in turn:
            connection.sendall(request)
        for connection in turn:
            _answer(connection, expect)


def _answer(connection: socket.socket, expect: bytes) -> None:
    """Read one answer from ``connection`` (head and body)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            raise SystemExit("bench: the server closed the connection")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(expect):
        raise SystemExit(f"bench: unexpected answer {head[:60]!r}")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    remaining = (int(length[1]) if length else 0) - len(body)
    while remaining > 0:
        chunk = connection.recv(65536)
        if not chunk:
            raise SystemExit("bench: the server closed the connection")
        remaining -= len(chunk)


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *(headers or [])],
        "state": {},
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts every run
    sys.exit(main())
