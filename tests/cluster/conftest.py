"""A real cluster for these tests: two replicas (subprocesses) behind Debian's nginx, on free loopback ports.

Started through :class:`deploy.cluster.Cluster`, the very supervisor of ``make cluster``,
with ``deploy/nginx.conf`` rendered as there. nginx is a prerequisite of ``make test``
(``make nginx``); without it these tests fail and say so.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.cluster import Cluster, nginx_binary


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports free right now (held together while chosen, so distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def served(url: str, route: str = "/init", headers: dict[str, str] | None = None) -> float:
    """How many answers the process at ``url`` has counted on ``route`` (any method and status); ``headers``: a key."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tensorinit_http_requests"
        for sample in family.samples
        if sample.name == "tensorinit_http_requests_total" and sample.labels.get("route") == route
    )


def upstream_count(cluster: Cluster, route: str = "/init", headers: dict[str, str] | None = None) -> float:
    """Answers on ``route`` counted by all replicas together."""
    return sum(served(r.url, route, headers) for r in cluster.replicas)


def tensor_sha256(body: bytes) -> str:
    """sha256 of a one-tensor safetensors file's data (what /stats reports as ``sha256``)."""
    header = int.from_bytes(body[:8], "little")
    return hashlib.sha256(body[8 + header :]).hexdigest()


def new_cluster(tmp: Path, replicas: int = 2, env: dict[str, str] | None = None) -> Cluster:
    """A cluster (not yet started: ``with new_cluster(...) as c``) on free ports, its state in ``tmp``; ``env`` for the replicas."""
    try:
        nginx_binary()
    except FileNotFoundError as err:
        pytest.fail(str(err))
    port, *ports = free_ports(replicas + 1)
    tmp.chmod(0o755)  # nginx's workers may run as another user
    return Cluster(port, ports, tmp, env={"TENSORINIT_ACCESS_LOG": "off", **(env or {})})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two replicas behind nginx, for one test module."""
    with new_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


#: The keys of :func:`keyed_cluster`'s replicas.
KEYS = ("k-one", "k-two")


@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two replicas that require an API key (``TENSORINIT_API_KEYS``) behind nginx, for one test module."""
    with new_cluster(tmp_path_factory.mktemp("keyed"), env={"TENSORINIT_API_KEYS": ",".join(KEYS)}) as running:
        yield running
