"""edgeauth benchmark: every scenario on 127.0.0.1, interleaved, ratios from one run.

The server under test is pinned to core 0; wrk (1 thread, 32 connections) and
the nginx upstream run on core 1. Each scenario is warmed up, then measured in
several interleaved rounds, the two scenarios of a ratio (sent the same
request) alternating in short slices; the table shows the median requests/s
with its range, the median p50/p99 latencies, and each server's peak RSS at
the end.
Results are also written as JSON (bench/results/latest.json).

edgeauth is measured as built for production: its request path compiled by
mypyc (build/compiled, made by ./scripts/compile); ``--build source`` measures
the Python sources instead.

    ./scripts/bench                  # everything
    ./scripts/bench --rounds 1 --seconds 3 --only raw,mw_   # a quick look
    ./scripts/bench --keep-servers   # one process per server for the whole run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
COMPILED = ROOT / "build" / "compiled"
SECRET = "benchmark-session-secret-0123456789-abcdefghijklmnop"
ISSUER = "https://issuer.bench"
AUDIENCE = "bench-api"
SERVER_CORE = "0"
LOAD_CORE = "1"
TOKENS = 100_000  # distinct tokens for the uncached scenarios (10x the default cache)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, in MiB."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            total += int(match.group(1)) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return []
    return [int(x) for x in out.stdout.split()]


@dataclass
class Server:
    name: str
    port: int
    argv: list[str]
    env: dict[str, str] | None
    core: str
    fresh: bool  # restarted before every round (every server under test)
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Scenario:
    name: str
    server: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    tokens_file: str | None = None  # rotate a header through these tokens
    token_header: str = ""
    token_prefix: str = ""
    expect_status: int = 200
    tokens_used: int = 0  # requests sent so far: the next run starts at this token


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server CPU time per request
    bad: int = 0

    def add(self, runs: list[tuple[float, float, float, float, int, int]]) -> None:
        """One round's measurement from its runs (slices of equal length):
        requests/s averaged, CPU per request over all requests, latencies the
        median of the slices'."""
        done = sum(run[5] for run in runs)
        self.rps.append(statistics.fmean(run[0] for run in runs))
        self.p50.append(statistics.median(run[1] for run in runs))
        self.p99.append(statistics.median(run[2] for run in runs))
        cpu = sum(run[3] * run[5] for run in runs)
        self.cpu_us.append(cpu / done if done else float("nan"))
        self.bad += sum(run[4] for run in runs)


class Bench:
    def __init__(self, work: Path, seconds: float, warmup: float) -> None:
        self.work = work
        self.seconds = seconds
        self.warmup = warmup
        self.servers: dict[str, Server] = {}
        self.stack = ExitStack()

    # servers -------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, core: str = SERVER_CORE) -> Server:
        port = free_port()
        argv = [a.replace("{port}", str(port)) for a in argv]
        return self.launch(name, port, argv, {**os.environ, **(env or {})}, core)

    def launch(
        self, name: str, port: int, argv: list[str], env: dict[str, str] | None, core: str, fresh: bool = True
    ) -> Server:
        """Start a server (pinned to ``core``) and wait for its port; it is
        stopped with the bench."""
        server = Server(name, port, argv, env, core, fresh)
        self.start(server)
        self.stack.callback(lambda: server.proc is not None and stop(server.proc))
        self.servers[name] = server
        return server

    def start(self, server: Server) -> None:
        with open(self.work / f"{server.name}.log", "ab") as log:
            server.proc = subprocess.Popen(
                ["taskset", "-c", server.core, *server.argv],
                env=server.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        wait_for_port(server.port, server.proc)

    def restart_fresh(self) -> None:
        """New processes for every server under test: each round then samples
        a process of its own, rather than every round inheriting one process's
        luck with the machine."""
        for server in self.servers.values():
            if server.fresh and server.proc is not None:
                stop(server.proc)
                self.start(server)

    def uvicorn(self, name: str, target: str, env: dict[str, str], factory: bool = False) -> Server:
        argv = [PYTHON, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "{port}",
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        if factory:
            argv.append("--factory")
        return self.spawn(name, argv, env)

    def nginx(self, name: str, conf_body: str, core: str, http_extra: str = "") -> Server:
        port = free_port()
        folder = self.work / name
        folder.mkdir()
        conf = folder / "nginx.conf"
        conf.write_text(
            "worker_processes 1;\nerror_log stderr warn;\npid " + str(folder / "nginx.pid") + ";\n"
            "events { worker_connections 1024; }\n"
            "http {\n access_log off;\n"
            f" client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
            f" fastcgi_temp_path {folder}/fcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;\n"
            f"{http_extra}"
            f" server {{\n  listen 127.0.0.1:{port};\n{conf_body}\n }}\n}}\n"
        )
        argv = ["nginx", "-p", str(folder), "-c", str(conf), "-g", "daemon off; master_process off;"]
        return self.launch(name, port, argv, None, core, fresh=name != "upstream")

    # load ----------------------------------------------------------------
    def wrk(self, scenario: Scenario, seconds: float) -> tuple[float, float, float, float, int, int]:
        """(requests/s, p50 ms, p99 ms, server CPU µs per request, unexpected
        statuses, requests done)."""
        server = self.servers[scenario.server]
        script = self.work / f"{scenario.name}.lua"
        lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in scenario.headers.items()]
        if scenario.tokens_file:
            lines += [
                "local tokens = {}",
                f'for line in io.lines("{scenario.tokens_file}") do tokens[#tokens + 1] = line end',
                # Runs continue where the last one stopped: every token is used
                # once before any is used again.
                f"local i = {scenario.tokens_used} % #tokens",
                "request = function()",
                "  i = i % #tokens + 1",
                f'  wrk.headers["{scenario.token_header}"] = "{scenario.token_prefix}" .. tokens[i]',
                "  return wrk.format(nil)",
                "end",
            ]
        lines += [
            "local bad = 0",
            f"response = function(status) if status ~= {scenario.expect_status} then bad = bad + 1 end end",
            'done = function() io.write("BAD " .. bad .. "\\n") end',
        ]
        script.write_text("\n".join(lines) + "\n")
        assert server.proc is not None
        cpu_before = cpu_seconds(server.proc.pid)
        out = subprocess.run(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c32", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
             f"http://127.0.0.1:{server.port}{scenario.path}"],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout
        cpu = cpu_seconds(server.proc.pid) - cpu_before
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        p50 = _latency(out, "50%")
        p99 = _latency(out, "99%")
        bad_match = re.search(r"BAD (\d+)", out)
        cpu_us = cpu / done * 1e6 if done else float("nan")
        scenario.tokens_used += done
        return rps, p50, p99, cpu_us, int(bad_match.group(1)) if bad_match else 0, done

    def close(self) -> None:
        self.stack.close()


def _latency(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop ``proc`` with ``sig``; killed if it is still running ``timeout`` seconds later."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def write_policy(work: Path, rsa_pem: bytes, upstream: str | None = None, listen: str | None = None) -> Path:
    (work / "partner.pem").write_bytes(rsa_pem)
    server = ""
    if upstream:
        server = (
            f'[server]\nlisten = "{listen}"\nupstream = "{upstream}"\n\n'
            '[forward_auth]\ndialect = "nginx"\ntrusted = ["127.0.0.1"]\n\n'
        )
    # Denials are audited to a file, as in production ([audit] file).
    log = "audit-proxy.log" if upstream else "audit-middleware.log"
    audit = f'[audit]\nfile = "{log}"\n\n'
    text = server + audit + f"""
[authenticators.session]
type = "jwt"
from = "cookie:session"
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
roles_claim = "role"

[authenticators.partner]
type = "jwt"
from = "bearer"
algorithms = ["RS256"]
public_key = "partner.pem"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"

[[rules]]
id = "public"
match = "/public/**"
public = true

[[rules]]
id = "session"
match = "/api/session/**"
authenticate = ["session"]

[[rules]]
id = "partner"
match = "/api/partner/**"
authenticate = ["partner"]
"""
    name = "policy-proxy.toml" if upstream else "policy.toml"
    path = work / name
    path.write_text(text)
    return path


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgeauth-bench-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per scenario before each round")
    parser.add_argument(
        "--keep-servers", dest="fresh_servers", action="store_false",
        help="one process per server for the whole run (default: new processes every round)",
    )
    parser.add_argument(
        "--only", default="", help="run only scenarios whose name starts with one of these (comma-separated)"
    )
    parser.add_argument(
        "--slices", type=int, default=5,
        help="a ratio's two scenarios alternate in this many runs per round (default 5)",
    )
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument(
        "--build", choices=("compiled", "source"), default="compiled",
        help="the edgeauth measured: request path compiled by mypyc (default; ./scripts/compile "
        "builds it) or the Python sources",
    )
    parser.add_argument(
        "--stream-mib",
        type=int,
        default=1024,
        help="also stream this many MiB up and down through edgeauth serve and report its "
        "RSS growth (0 skips it)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (./scripts/bench installs it)", file=sys.stderr)
            return 2

    # What the servers import: the compiled build first on the path, or the sources.
    args.pythonpath = f"{COMPILED}{os.pathsep}{ROOT}" if args.build == "compiled" else str(ROOT)
    loaded = subprocess.run(
        [PYTHON, "-c", "import edgeauth.pipeline as m; print(m.__file__)"],
        env={**os.environ, "PYTHONPATH": args.pythonpath}, capture_output=True, text=True, check=False,
    ).stdout.strip()
    if loaded.endswith(".py") != (args.build == "source"):
        print(f"bench: the {args.build} build is not what loads ({loaded or 'nothing'}); "
              "./scripts/compile builds the compiled one", file=sys.stderr)
        return 2
    print(f"edgeauth build: {args.build} ({loaded})", file=sys.stderr)

    with workdir() as work:
        bench = Bench(work, args.seconds, args.warmup)
        try:
            return run(bench, work, args)
        finally:
            bench.close()


def run(bench: Bench, work: Path, args: argparse.Namespace) -> int:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 7200}
    session = jwt.encode({"sub": "alice", "role": ["user"], **claims}, SECRET, algorithm="HS256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    partner = jwt.encode({"sub": "partner", **claims}, key, algorithm="RS256")
    tokens_file = work / "tokens.txt"
    with tokens_file.open("w") as f:
        for i in range(TOKENS):
            f.write(jwt.encode({"sub": f"user-{i}", "role": ["user"], **claims}, SECRET, algorithm="HS256") + "\n")
    policy = write_policy(work, pem)
    env = {"BENCH_SECRET": SECRET, "BENCH_ISSUER": ISSUER, "BENCH_AUDIENCE": AUDIENCE,
           "BENCH_POLICY": str(policy), "PYTHONPATH": args.pythonpath}

    only = [o for o in args.only.split(",") if o]

    def wanted(prefix: str) -> bool:
        return not only or any(prefix.startswith(o) or o.startswith(prefix) for o in only)

    scenarios: list[Scenario] = []
    cookie = {"Cookie": f"session={session}"}
    bearer = {"Authorization": f"Bearer {partner}"}
    fa = {"X-Original-URI": "/api/session/x", "X-Original-Method": "GET"}
    # Each ratio compares servers sent the same request, byte for byte: a
    # baseline sent fewer headers would charge edgeauth for the parsing of the
    # headers it was not sent (raw app under callgrind: 109,100 instructions per
    # request with Host alone, 113,100 with the cookie, 118,600 with the cookie
    # and the forward-auth headers).
    if wanted("raw") or wanted("mw_") or wanted("forward_"):
        bench.uvicorn("raw", "bench.apps:raw_app", env)
        bench.uvicorn("raw_twin", "bench.apps:raw_app", env)
        scenarios += [
            Scenario("raw", "raw", "/api/session/x"),
            Scenario("raw_twin", "raw_twin", "/api/session/x"),
            Scenario("raw_cookie", "raw", "/api/session/x", headers=cookie),
            Scenario("raw_bearer", "raw", "/api/partner/x", headers=bearer),
            Scenario("raw_forward_auth", "raw", "/api/session/x", headers={**fa, **cookie}),
        ]
    if wanted("raw") or wanted("mw_"):
        bench.uvicorn("raw_pyjwt", "bench.apps:pyjwt_app", env)
        bench.uvicorn("raw_denial_shape", "bench.apps:denial_shaped_app", env)
        bench.uvicorn("raw_denial_audited", "bench.apps:audited_denial_app",
                      {**env, "BENCH_AUDIT_FILE": str(work / "audit-floor.log")})
        bench.uvicorn("middleware", "bench.apps:guarded_app", env, factory=True)
        scenarios += [
            Scenario("raw_pyjwt_uncached", "raw_pyjwt", "/api/session/x", tokens_file=str(tokens_file),
                     token_header="Cookie", token_prefix="session="),
            Scenario("raw_denial_shape", "raw_denial_shape", "/api/session/x", expect_status=401),
            Scenario("raw_denial_audited", "raw_denial_audited", "/api/session/x", expect_status=401),
            Scenario("mw_public", "middleware", "/public/x"),
            Scenario("mw_cookie_hs256_cached", "middleware", "/api/session/x", headers=cookie),
            Scenario("mw_bearer_rs256_cached", "middleware", "/api/partner/x", headers=bearer),
            Scenario("mw_uncached_hs256", "middleware", "/api/session/x", tokens_file=str(tokens_file),
                     token_header="Cookie", token_prefix="session="),
            Scenario("mw_denied", "middleware", "/api/session/x", expect_status=401),
        ]
    if wanted("proxy_") or wanted("serve_") or wanted("nginx_") or wanted("forward_"):
        upstream = bench.nginx(
            "upstream", '  location / { default_type application/json; return 200 \'{"ok":true}\'; }', LOAD_CORE
        )
        upstream_url = f"http://127.0.0.1:{upstream.port}"
        # Kept-alive connections to the upstream, as docs/deploy/nginx.conf has them:
        # without an upstream block nginx opens a connection per request.
        bench.nginx("nginx_proxy", "  location / { proxy_pass http://app; proxy_http_version 1.1;"
                    " proxy_set_header Connection \"\"; }", SERVER_CORE,
                    http_extra=f" upstream app {{ server 127.0.0.1:{upstream.port}; keepalive 32; }}\n")
        env_proxy = {**env, "BENCH_UPSTREAM": upstream_url}
        bench.uvicorn("bare_proxy", "bench.bare_proxy:app", env_proxy)
        scenarios += [
            Scenario("nginx_proxy", "nginx_proxy", "/api/session/x"),
            Scenario("proxy_bare_aiohttp", "bare_proxy", "/api/session/x"),
            Scenario("proxy_bare_aiohttp_cookie", "bare_proxy", "/api/session/x", headers=cookie),
            Scenario("proxy_bare_aiohttp_bearer", "bare_proxy", "/api/partner/x", headers=bearer),
        ]
        if _has_serve():
            listen_port = free_port()
            proxy_policy = write_policy(work, pem, upstream=upstream_url, listen=f"127.0.0.1:{listen_port}")
            _spawn_serve(bench, proxy_policy, listen_port, args.pythonpath)
            _nginx_forward_auth(bench, listen_port, upstream.port)
            scenarios += [
                Scenario("forward_auth_cached", "serve", "/_edgeauth/auth", headers={**fa, **cookie}),
                Scenario("nginx_forward_auth", "nginx_forward_auth", "/api/session/x", headers=cookie),
                Scenario("serve_public", "serve", "/public/x"),
                Scenario("serve_cookie_hs256_cached", "serve", "/api/session/x", headers=cookie),
                Scenario("serve_bearer_rs256_cached", "serve", "/api/partner/x", headers=bearer),
                Scenario("serve_uncached_hs256", "serve", "/api/session/x", tokens_file=str(tokens_file),
                         token_header="Cookie", token_prefix="session="),
                Scenario("serve_denied", "serve", "/api/session/x", expect_status=401),
            ]
    scenarios = [s for s in scenarios if wanted(s.name)]
    blocks = ratio_blocks(scenarios)

    results = {s.name: Result() for s in scenarios}
    uncached_at_last_start = 0
    for round_ in range(args.rounds):
        if args.fresh_servers and round_ > 0:
            bench.restart_fresh()
        if args.fresh_servers or round_ == 0:
            uncached_at_last_start = sum(
                s.tokens_used for s in scenarios if s.name == "serve_uncached_hs256"
            )
        print(f"round {round_ + 1}: warming up {len(scenarios)} scenarios ({args.warmup:g} s each)",
              file=sys.stderr)
        for scenario in scenarios:
            bench.wrk(scenario, args.warmup)
        for block in blocks:
            # A ratio's two scenarios alternate in --slices short runs (baseline
            # first): the machine's speed, which drifts from second to second
            # here, then weighs on both sides of the ratio alike.
            slices = args.slices if len(block) > 1 else 1
            runs: dict[str, list[tuple[float, float, float, float, int, int]]] = {
                s.name: [] for s in block
            }
            for _ in range(slices):
                for scenario in block:
                    runs[scenario.name].append(bench.wrk(scenario, args.seconds / slices))
            for scenario in block:
                r = results[scenario.name]
                r.add(runs[scenario.name])
                print(f"round {round_ + 1}/{args.rounds} {scenario.name:<28} {r.rps[-1]:>9.0f} req/s",
                      file=sys.stderr)
    uncached = next((s for s in scenarios if s.name == "serve_uncached_hs256"), None)
    if uncached is not None:
        # The RSS target is for a worker that has seen 100,000 distinct tokens:
        # the last round's worker goes on until it has.
        seen = uncached.tokens_used - uncached_at_last_start
        for _ in range(60):
            if seen >= TOKENS:
                break
            print(f"distinct tokens through this edgeauth serve worker: {seen:,}", file=sys.stderr)
            before = uncached.tokens_used
            bench.wrk(uncached, 10)
            seen += uncached.tokens_used - before
        args.serve_tokens = min(seen, TOKENS)
    rss = {name: peak_rss_mib(server.proc.pid) for name, server in bench.servers.items() if server.proc}
    stream = (
        streaming(args.stream_mib, args.pythonpath, args.build) if args.stream_mib and not only else None
    )
    report(scenarios, results, rss, args, stream)
    return 0


def streaming(mib: int, pythonpath: str, build: str) -> dict[str, float] | None:
    """Upload and download ``mib`` MiB through `edgeauth serve` (the proxy test's
    streaming check, at benchmark size) and read the proxy's RSS growth."""
    print(f"streaming {mib} MiB each way through edgeauth serve", file=sys.stderr)
    # The test run checks that it loads the build it is told it tests (tests/conftest.py).
    env = {**os.environ, "EDGEAUTH_STREAM_MIB": str(mib), "PYTHONPATH": pythonpath,
           "EDGEAUTH_TEST_BUILD": build}
    out = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/test_proxy.py::test_bodies_stream_both_ways_without_buffering"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )
    match = re.search(r"proxy RSS baseline ([\d.]+) MiB, peak ([\d.]+) MiB", out.stdout)
    if out.returncode != 0 or not match:
        print("streaming failed:\n" + out.stdout[-2000:] + out.stderr[-2000:], file=sys.stderr)
        return None
    baseline, peak = float(match.group(1)), float(match.group(2))
    return {"mib_each_way": mib, "rss_baseline_mib": baseline, "rss_peak_mib": peak}


def _has_serve() -> bool:
    try:
        import edgeauth.server  # noqa: F401
    except ImportError:
        return False
    return True


def _spawn_serve(bench: Bench, policy: Path, port: int, pythonpath: str) -> Server:
    argv = [str(ROOT / ".venv" / "bin" / "edgeauth"), "serve", "--config", str(policy)]
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return bench.launch("serve", port, argv, env, SERVER_CORE)


def _nginx_forward_auth(bench: Bench, edgeauth_port: int, upstream_port: int) -> Server:
    """nginx running the documented auth_request config (docs/deploy/nginx.conf)."""
    port = free_port()
    folder = bench.work / "nginx_forward_auth"
    folder.mkdir()
    site = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    site = site.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    site = site.replace("127.0.0.1:9000", f"127.0.0.1:{edgeauth_port}")
    site = site.replace("127.0.0.1:3000", f"127.0.0.1:{upstream_port}")
    (folder / "site.conf").write_text(site)
    conf = folder / "nginx.conf"
    conf.write_text(
        "worker_processes 1;\nerror_log stderr warn;\npid " + str(folder / "nginx.pid") + ";\n"
        "events { worker_connections 1024; }\n"
        "http {\n access_log off;\n"
        f" client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f" fastcgi_temp_path {folder}/fcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;\n"
        f" include {folder / 'site.conf'};\n}}\n"
    )
    argv = ["nginx", "-p", str(folder), "-c", str(conf), "-g", "daemon off; master_process off;"]
    return bench.launch("nginx_forward_auth", port, argv, None, SERVER_CORE)


RATIOS = [
    ("middleware, cached HS256 cookie / raw app", "mw_cookie_hs256_cached", "raw_cookie", 0.80),
    ("middleware, cached RS256 bearer / raw app", "mw_bearer_rs256_cached", "raw_bearer", 0.80),
    ("middleware, denied / raw app", "mw_denied", "raw", 0.80),
    ("middleware, uncached HS256 / raw app + PyJWT", "mw_uncached_hs256", "raw_pyjwt_uncached", 0.85),
    ("serve, cached HS256 cookie / bare aiohttp proxy", "serve_cookie_hs256_cached", "proxy_bare_aiohttp_cookie", 0.90),
    ("serve, cached RS256 bearer / bare aiohttp proxy", "serve_bearer_rs256_cached", "proxy_bare_aiohttp_bearer", 0.90),
    ("forward-auth endpoint, cached cookie / raw app", "forward_auth_cached", "raw_forward_auth", 0.70),
    ("nginx + edgeauth forward-auth / nginx alone (end to end)", "nginx_forward_auth", "nginx_proxy", 0.0),
    # What the server alone charges for a denial's answer (six headers, a JSON
    # body), then for that answer and its audit line with nothing decided (the
    # ceiling of the denied ratio), and the share left to edgeauth's own work.
    ("raw app sending the denial's answer / raw app", "raw_denial_shape", "raw", 0.0),
    ("raw app answering and auditing the denial, nothing decided / raw app", "raw_denial_audited", "raw", 0.0),
    ("middleware, denied / raw app sending the same answer", "mw_denied", "raw_denial_shape", 0.0),
    # Two processes of the same app: what a ratio reads where there is no
    # difference, the method's own error in this run.
    ("raw app, a second process / raw app (no difference: the method's error)", "raw_twin", "raw", 0.0),
]


def ratio_blocks(scenarios: list[Scenario]) -> list[list[Scenario]]:
    """The scenarios in measuring order: each ratio's baseline and scenario in
    one block (ratios that share a scenario share the block), then the others
    one by one."""
    by_name = {s.name: s for s in scenarios}
    blocks: list[list[Scenario]] = []
    for _, num, den, _ in RATIOS:
        if num not in by_name or den not in by_name:
            continue
        pair = [by_name[den], by_name[num]]
        block = next((b for b in blocks if pair[0] in b or pair[1] in b), None)
        if block is None:
            blocks.append(pair)
        else:
            block += [s for s in pair if s not in block]
    placed = {s.name for block in blocks for s in block}
    blocks += [[s] for s in scenarios if s.name not in placed]
    return blocks


def report(
    scenarios: list[Scenario],
    results: dict[str, Result],
    rss: dict[str, float],
    args: argparse.Namespace,
    stream: dict[str, float] | None,
) -> None:
    rows = []
    print(f"\n{'scenario':<28} {'req/s median':>12} {'range':>17} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU us/req':>10} {'peak RSS':>9}")
    for s in scenarios:
        r = results[s.name]
        med = statistics.median(r.rps)
        row = {
            "scenario": s.name,
            "rps_median": round(med, 1),
            "rps_min": round(min(r.rps), 1),
            "rps_max": round(max(r.rps), 1),
            "p50_ms": round(statistics.median(r.p50), 3),
            "p99_ms": round(statistics.median(r.p99), 3),
            "cpu_us_per_request": round(statistics.median(r.cpu_us), 1),
            "peak_rss_mib": round(rss.get(s.server, float("nan")), 1),
            "unexpected_status": r.bad,
        }
        rows.append(row)
        flag = "  (!) unexpected statuses" if r.bad else ""
        print(
            f"{s.name:<28} {med:>12.0f} {min(r.rps):>8.0f}-{max(r.rps):<8.0f} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['cpu_us_per_request']:>10.1f} "
            f"{row['peak_rss_mib']:>7.1f}Mi{flag}"
        )
    # Each ratio is taken within a round (the two scenarios ran minutes apart at
    # most), then the median over rounds: drift between rounds cancels out.
    ratios = []
    print(f"\n{'ratio (same round, median of rounds)':<58} {'value':>6} {'range':>11} "
          f"{'by CPU':>7} {'target':>7}")
    for label, num, den, target in RATIOS:
        if num not in results or den not in results:
            continue
        a, b = results[num], results[den]
        per_round = [x / y for x, y in zip(a.rps, b.rps, strict=True) if y]
        by_cpu = [y / x for x, y in zip(a.cpu_us, b.cpu_us, strict=True) if x]
        if not per_round:
            continue
        value = statistics.median(per_round)
        cpu_value = statistics.median(by_cpu) if by_cpu else float("nan")
        ratios.append({"ratio": label, "value": round(value, 3), "target": target or None,
                       "met": value >= target, "rounds": [round(v, 3) for v in per_round],
                       "by_cpu": round(cpu_value, 3)})
        verdict = ("ok" if value >= target else "MISSED") if target else "(reported)"
        shown = f">= {target}" if target else "-"
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
        print(f"{label:<58} {value:>6.2f} {spread:>11} {cpu_value:>7.2f} {shown:>7} {verdict}")
    if "serve" in rss and hasattr(args, "serve_tokens"):
        tokens = args.serve_tokens
        met = rss["serve"] < 100 and tokens >= TOKENS
        ratios.append({"ratio": "serve peak RSS MiB", "value": round(rss["serve"], 1), "target": 100,
                       "met": met, "distinct_tokens": tokens})
        label = f"edgeauth serve peak RSS (MiB, < 100) after {tokens:,} tokens"
        print(f"{label:<58} {rss['serve']:>6.1f} {'< 100':>7} {'ok' if met else 'MISSED'}")
    if stream is not None:
        growth = stream["rss_peak_mib"] - stream["rss_baseline_mib"]
        met = growth < 50
        ratios.append({"ratio": "serve RSS growth streaming (MiB)", "value": round(growth, 1),
                       "target": 50, "met": met})
        label = f"serve RSS growth, {stream['mib_each_way']:g} MiB each way (< 50)"
        print(f"{label:<58} {growth:>6.1f} {'< 50':>7} {'ok' if met else 'MISSED'}")
    elif args.stream_mib and not args.only:  # run, and failed: said, not left out
        ratios.append({"ratio": "serve RSS growth streaming (MiB)", "value": None,
                       "target": 50, "met": False, "failed": True})
        label = f"serve RSS growth, {args.stream_mib:g} MiB each way (< 50)"
        print(f"{label:<58} {'failed':>6} {'< 50':>7} MISSED (see above)")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds, "seconds": args.seconds, "slices": args.slices, "connections": 32,
        "cpu": os.cpu_count(), "python": sys.version.split()[0], "build": args.build,
        "scenarios": rows, "ratios": ratios, "streaming": stream,
    }, indent=2) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    sys.exit(main())
