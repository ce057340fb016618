"""The real deployment the wire tests share: ``edgeauth serve`` in front of the
echo upstream, on 127.0.0.1 (trusted) and ::1 (untrusted), started once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .. import servers
from .common import PROXY_SETTINGS, write_security_policy


@dataclass
class Deployment:
    """Where edgeauth listens, and the two processes."""

    port: int
    edgeauth: servers.Process
    upstream: servers.Process


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("proxy")
    with servers.upstream("echo", folder) as upstream:
        port = servers.free_port()
        server = servers.server_section(port, upstream.url, **PROXY_SETTINGS)
        with servers.edgeauth(write_security_policy(folder, server), port, dual_stack=True) as ea:
            servers.upstream_log(upstream)  # start from an empty record
            yield Deployment(port, ea, upstream)
