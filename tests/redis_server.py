"""Real processes for state tests: Debian's redis-server, and EdgeAuth under uvicorn.

``RedisServer`` runs ``redis-server`` on a free 127.0.0.1 port with no
persistence; a test can :meth:`~RedisServer.stop` and :meth:`~RedisServer.start`
it again on the same port (the Redis comes back empty, as after a crash without
persistence). ``AppProcess`` runs ``python -m tests.redis_server POLICY``: the
EdgeAuth middleware around the echo app, under uvicorn, on an ephemeral port
that the child prints once it is listening. Every process is stopped by the
fixture or context manager that started it; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class RedisServer:
    """One redis-server on 127.0.0.1, no persistence, restartable on its port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str, sentinel_of: int | None = None) -> None:
        """Start (or restart) on this server's port; ``sentinel_of`` makes it a
        Sentinel monitoring the master on that port as service ``main``."""
        exe = shutil.which("redis-server")
        assert exe is not None, "redis-server is not installed (scripts/test installs it)"
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        if sentinel_of is not None:
            conf = self.folder / "sentinel.conf"
            conf.write_text(f"sentinel monitor main 127.0.0.1 {sentinel_of} 1\n")
            args = [exe, str(conf), "--sentinel", *where, *extra]
        else:
            args = [exe, *where, "--save", "", "--appendonly", "no", *extra]
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (RESP) and return the raw first reply chunk."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload)
            return s.recv(65536)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class AppProcess:
    """EdgeAuth(echo_app) under uvicorn in a child process, for one policy file."""

    def __init__(self, policy: Path) -> None:
        self.policy = policy
        self.log = policy.with_name(f"app-{id(self)}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> AppProcess:
        self.launch()
        self.wait()
        return self

    def launch(self) -> None:
        # The tests' own path first (the compiled build, when it is under test).
        path = [*filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)), str(ROOT)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.redis_server", str(self.policy)],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                env=env,
            )

    def wait(self) -> None:
        """Wait (at most 30 s) for the child to print its port."""
        assert self.proc is not None
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            line = self.proc.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                raise AssertionError(f"app did not start: {self.log.read_text()[-2000:]}")
            self.url = f"http://127.0.0.1:{int(line)}"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def app_processes(policy: Path, count: int) -> Iterator[list[AppProcess]]:
    """``count`` AppProcesses of one policy, started in parallel, all stopped on exit."""
    apps = [AppProcess(policy) for _ in range(count)]
    try:
        for app in apps:
            app.launch()
        for app in apps:
            app.wait()
        yield apps
    finally:
        for app in apps:
            app.close()


def _serve(policy: str) -> None:
    import uvicorn

    from edgeauth import EdgeAuth, load_policy
    from tests.helpers import echo_app

    app = EdgeAuth(echo_app, policy=load_policy(policy))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    _serve(sys.argv[1])
