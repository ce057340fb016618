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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
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

    async def warm() -> None:  # fill the memos and the token cache, with a loop running
        for name in scenarios:
            app, scope = cases[name]
            for _ in range(200):
                await app(dict(scope), receive, send)
                await raw_app(dict(scope), receive, send)

    asyncio.run(warm())
    expected = {"denied": 401}
    loops = []
    for name in scenarios:
        app, scope = cases[name]
        for label, target in (("raw", raw_app), ("guarded", app)):
            statuses.clear()
            loops.append(f"{name}:{label}")
            sys.call_tracing(loop, (target, scope))
            want = expected.get(name, 200) if label == "guarded" else 200
            assert set(statuses) == {want}, (name, label, set(statuses))
    print("LOOPS " + " ".join(loops), flush=True)


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
