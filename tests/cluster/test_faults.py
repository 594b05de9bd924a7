"""Faults under nginx: a replica killed during load, a replica that stalls (bounded: one 30 s load).

Only the Python client's own retry policy helps the load's clients (it resumes a cut
body with Range + If-Range); every body is checked against /stats (``verify=True``).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tensorinit import Client, RetryPolicy

from deploy.cluster import Cluster

from .conftest import new_cluster, served

LOAD_SECONDS = 30.0
CLIENTS = 20
KILL_AFTER = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh cluster per test: these break it."""
    with new_cluster(tmp_path) as running:
        yield running


@pytest.mark.slow
def test_kill_9_of_a_replica_during_load_loses_no_request_and_it_rejoins(cluster: Cluster) -> None:
    seeds = itertools.count(1000)
    lock = threading.Lock()
    done: list[int] = []
    failures: list[BaseException] = []
    end = time.monotonic() + LOAD_SECONDS

    def load() -> None:
        policy = RetryPolicy(max_retries=8, initial_delay=0.2, max_delay=2.0)
        with Client(cluster.url, max_retries=policy, timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            while time.monotonic() < end:
                with lock:
                    seed = next(seeds)
                try:
                    w = client.init("he_normal", (1024, 1024), name="weight", seed=seed, verify=True)  # 4 MiB: streamed
                    assert isinstance(w, np.ndarray) and w.shape == (1024, 1024)
                except BaseException as err:  # collected: a thread's exception would be lost
                    failures.append(err)
                    return
                with lock:
                    done.append(seed)

    clients = [threading.Thread(target=load) for _ in range(CLIENTS)]
    for t in clients:
        t.start()
    victim = cluster.replicas[0]
    time.sleep(KILL_AFTER)
    victim.signal(signal.SIGKILL)
    assert victim.process is not None
    victim.process.wait()
    assert cluster.revive() == [victim]  # what `make cluster`'s supervisor does; returns once it is ready
    rejoined_at = served(victim.url)
    for t in clients:
        t.join(LOAD_SECONDS + 120)
    assert not failures, failures[:3]
    assert len(done) == len(set(done)) > CLIENTS
    log = (cluster.state / "error.log").read_text()
    assert "prematurely closed" in log or "connect() failed" in log, "the kill was not seen by nginx"
    # Rejoined: nginx sends it requests again (at once if the load outlasted its restart,
    # else after the 5 s fail_timeout; bounded either way).
    deadline = time.monotonic() + 20
    while served(victim.url) == rejoined_at:
        assert time.monotonic() < deadline, "the restarted replica got no request"
        httpx.get(f"{cluster.url}/init?scheme=he_normal&shape=64,64&seed={next(seeds)}", timeout=30).raise_for_status()
        time.sleep(0.1)


@pytest.mark.slow
def test_a_stalled_replica_is_routed_around_by_the_read_timeout(cluster: Cluster) -> None:
    stalled, healthy = cluster.replicas
    before = served(healthy.url)
    stalled.signal(signal.SIGSTOP)
    try:
        answers: list[httpx.Response] = []

        def fetch(seed: int) -> None:
            answers.append(httpx.get(f"{cluster.url}/init?scheme=he_normal&shape=256,256&seed={seed}", timeout=60))

        # Concurrent: least_conn gives some of them to the stalled replica.
        threads = [threading.Thread(target=fetch, args=(2000 + i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        log = (cluster.state / "error.log").read_text()
    finally:
        stalled.signal(signal.SIGCONT)
    assert [a.status_code for a in answers] == [200] * 4
    direct = {httpx.get(f"{healthy.url}/init?scheme=he_normal&shape=256,256&seed={2000 + i}").content for i in range(4)}
    assert {a.content for a in answers} == direct
    assert "upstream timed out (110: Connection timed out) while reading response header from upstream" in log
    assert f"127.0.0.1:{stalled.port}" in log
    assert served(healthy.url) >= before + 4
