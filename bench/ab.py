"""Two builds of edgeauth side by side: which one answers a request for less CPU.

``./scripts/bench`` measures each ratio's two sides a second apart, and this
shared machine's speed moves within seconds: one build against another would
need many full runs to tell a point apart. Here both builds serve the same
middleware (``bench.apps:guarded_app``) with the same policy, each in its own
uvicorn process on the server core, each loaded all along by its own wrk on
the other core, and the two processes take turns on the server core
(``--turn`` seconds at a time, the other stopped with ``SIGSTOP``), so both
see the same machine. The result is the ratio of their requests per second of
CPU time: above 1, build B costs less per request.

Turns cost each process the refill of its caches; two processes of the same
app are the same size, so the turns cost both alike (20 ms turns cost a
process twice the raw app's size several points; docs/performance.md,
"Shorter turns"). Processes of one build also differ for their whole life by
a point or so, so the comparison takes several pairs of processes, each
measured in both orders.

    .venv/bin/python bench/ab.py build/compiled /tmp/other-build
    .venv/bin/python bench/ab.py build/compiled src --scenario denied --pairs 2

A build is a folder to put first on ``PYTHONPATH``: a compiled build
(``./scripts/compile``'s ``build/compiled``) or a ``src`` folder. Needs wrk
(``./scripts/bench`` installs it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    AUDIENCE,
    ISSUER,
    LOAD_CORE,
    PYTHON,
    ROOT,
    SECRET,
    SERVER_CORE,
    cpu_seconds,
    free_port,
    stop,
    wait_for_port,
    write_policy,
)

SCENARIOS = {  # name: (path, header, expected status)
    "cookie": ("/api/session/x", "cookie", 200),
    "bearer": ("/api/partner/x", "bearer", 200),
    "denied": ("/api/session/x", None, 401),
    "public": ("/public/x", None, 200),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("build_a", help="build A: a folder to put first on PYTHONPATH")
    parser.add_argument("build_b", help="build B, compared with A")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="cookie")
    parser.add_argument(
        "--pairs", type=int, default=3, help="pairs of processes, one of each build (default 3)"
    )
    parser.add_argument(
        "--runs", type=int, default=4, help="runs per pair, half with each build first (default 4)"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per run (default 6)")
    parser.add_argument(
        "--turn", type=float, default=0.1, help="seconds per turn on the server core (default 0.1)"
    )
    args = parser.parse_args()
    builds = [Path(b).resolve() for b in (args.build_a, args.build_b)]
    for build in builds:
        if not (build / "edgeauth" / "__init__.py").is_file():
            parser.error(f"{build}: no edgeauth package in this folder")
    if args.pairs < 1 or args.runs < 1 or args.seconds < 1 or not 0.01 <= args.turn <= args.seconds:
        parser.error("expected --pairs, --runs and --seconds of at least 1, --turn under --seconds")
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (./scripts/bench installs it)", file=sys.stderr)
        return 2

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeauth-ab-")))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 7200}
        session = jwt.encode(
            {"sub": "alice", "role": ["user"], **claims}, SECRET, algorithm="HS256"
        )
        partner = jwt.encode({"sub": "partner", **claims}, key, algorithm="RS256")
        headers = {
            "cookie": f"Cookie: session={session}",
            "bearer": f"Authorization: Bearer {partner}",
        }
        path, header, status = SCENARIOS[args.scenario]
        script = work / "load.lua"
        script.write_text(
            "local bad = 0\n"
            f"response = function(status) if status ~= {status} then bad = bad + 1 end end\n"
            'done = function() io.write("BAD " .. bad .. "\\n") end\n'
        )
        env = {**os.environ, "BENCH_POLICY": str(write_policy(work, pem))}
        load = ["-s", str(script), *(["-H", headers[header]] if header else []), path]

        print(f"{args.scenario}: B/A, requests per CPU second (above 1: B costs less per request)")
        print(f"  A = {builds[0]}\n  B = {builds[1]}")
        ratios: list[float] = []
        for pair in range(args.pairs):
            servers = [_serve(stack, build, env) for build in builds]
            for port, _ in servers:  # warm up (memos, the token cache), each alone
                _wrk(port, load, 2.0).wait(timeout=30)
            mine = []
            for run in range(args.runs):
                order = (0, 1) if run % 2 == 0 else (1, 0)
                a_cost, b_cost = _paired([servers[i] for i in order], load, args.seconds, args.turn)
                costs = (a_cost, b_cost) if order == (0, 1) else (b_cost, a_cost)
                mine.append(costs[0] / costs[1])
            ratios += mine
            print(
                f"pair {pair + 1}: "
                + " ".join(f"{r:.4f}" for r in mine)
                + f"  median {statistics.median(mine):.4f}"
            )
            for _, proc in servers:
                stop(proc)
        spread = f"{min(ratios):.4f}-{max(ratios):.4f}"
        median, mean = statistics.median(ratios), statistics.mean(ratios)
        print(f"all {len(ratios)} runs: median {median:.4f}, mean {mean:.4f}, range {spread}")
    return 0


def _serve(
    stack: ExitStack, build: Path, env: dict[str, str]
) -> tuple[int, subprocess.Popen[bytes]]:
    """The middleware of ``build`` under uvicorn on the server core: (port, process)."""
    port = free_port()
    argv = ["taskset", "-c", SERVER_CORE, PYTHON, "-m", "uvicorn", "bench.apps:guarded_app",
            "--factory", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    path = f"{build}{os.pathsep}{ROOT}"
    proc = subprocess.Popen(argv, env={**env, "PYTHONPATH": path}, cwd=ROOT)  # noqa: S603
    stack.callback(stop, proc)
    wait_for_port(port, proc)
    return port, proc


def _wrk(port: int, load: list[str], seconds: float) -> subprocess.Popen[str]:
    *options, path = load
    duration = f"-d{max(1, round(seconds))}s"
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c32", duration, *options,
            f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603


def _paired(
    servers: list[tuple[int, subprocess.Popen[bytes]]], load: list[str], seconds: float, turn: float
) -> tuple[float, float]:
    """Both servers loaded at once, the first running first, in turns of ``turn``
    seconds: each one's CPU seconds per request."""
    pids = [proc.pid for _, proc in servers]
    before = [cpu_seconds(pid) for pid in pids]
    os.kill(pids[1], signal.SIGSTOP)
    loads = [_wrk(port, load, seconds + 60) for port, _ in servers]  # stopped by SIGINT below
    try:
        running, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(turn)
            os.kill(pids[running], signal.SIGSTOP)
            running = 1 - running
            os.kill(pids[running], signal.SIGCONT)
        os.kill(pids[running], signal.SIGSTOP)  # both stopped: wrk counts what was answered
        for w in loads:
            w.send_signal(signal.SIGINT)
        outs = [w.communicate(timeout=30)[0] for w in loads]
        spent = [cpu_seconds(pid) - t for pid, t in zip(pids, before, strict=True)]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        for w in loads:
            if w.poll() is None:
                w.kill()
                w.wait()
    costs = []
    for out, cpu in zip(outs, spent, strict=True):
        done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        bad = int(re.search(r"BAD (\d+)", out).group(1))  # type: ignore[union-attr]
        if bad or not done:
            raise SystemExit(f"bench: {bad} unexpected statuses in {done} requests")
        costs.append(cpu / done)
    return costs[0], costs[1]


if __name__ == "__main__":
    sys.exit(main())
