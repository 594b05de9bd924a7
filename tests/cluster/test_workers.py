"""``TENSORINIT_WORKERS=2``: one socket, two worker processes, one /metrics that counts both."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from deploy.cluster import ROOT, wait_until

from .conftest import free_ports, served

QUERY = "/init?scheme=he_uniform&shape=512,512&seed=5"  # 1 MiB: a stream, not an inline answer


def _count(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _per_worker(directory: Path, scratch: Path) -> dict[str, float]:
    """/init answers counted in each worker's own file (read alone through prometheus-client's collector)."""
    found: dict[str, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = file.stem.removeprefix("counter_")
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        found[pid] = _count(generate_latest(registry).decode(), "tensorinit_http_requests_total", route="/init")
    return found


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_999999.db").write_bytes(b"left by an earlier run")  # wiped at start
    (port,) = free_ports(1)
    env = {**os.environ, "TENSORINIT_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics), "TENSORINIT_ACCESS_LOG": "off"}
    process = subprocess.Popen([sys.executable, "-m", "service.api.serve", "--port", str(port)], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{url}/readyz", 120, process)
        yield url, metrics
    finally:
        process.terminate()
        assert process.wait(30) == 0


def test_metrics_count_the_requests_of_every_worker(workers: tuple[str, Path], tmp_path: Path) -> None:
    url, metrics = workers
    assert not (metrics / "counter_999999.db").exists()
    sent = 0
    by_worker: dict[str, float] = {}
    for _ in range(20):  # concurrent fresh connections until both workers have answered some (bounded)

        def fetch() -> None:
            with httpx.Client(timeout=60) as client:
                assert len(client.get(url + QUERY).content) > 1 << 20

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent += len(threads)
        by_worker = _per_worker(metrics, tmp_path / f"scratch-{sent}")
        if sum(1 for n in by_worker.values() if n > 0) >= 2:
            break
    assert sum(1 for n in by_worker.values() if n > 0) == 2, by_worker
    assert sum(by_worker.values()) == sent
    # Whichever worker answers a scrape, it reports every worker's answers.
    idle = re.compile(r"^tensorinit_generations_in_flight(\{[^}]*\})? 0\.0$", re.M)
    # Another worker's in-flight gauge is copied to the shared files every SAMPLE_SECONDS:
    # it reads 0 once that worker's last stream has ended and been sampled (bounded wait).
    deadline = time.monotonic() + 10
    while not idle.search(httpx.get(url + "/metrics").text):
        assert time.monotonic() < deadline, "livesum gauges: 0 when idle"
        time.sleep(0.1)
    for _ in range(6):
        with httpx.Client() as fresh:  # a new connection: any worker may take it
            assert served(url) == sent
            text = fresh.get(url + "/metrics").text
        assert _count(text, "tensorinit_http_requests_total", route="/init", status="200") == sent
        assert idle.search(text), "livesum gauges: 0 when idle"
    # Stream counters are copied from each worker at least every SAMPLE_SECONDS.
    deadline = time.monotonic() + 10
    while (completed := _count(httpx.get(url + "/metrics").text, "tensorinit_streams_total", outcome="completed")) < sent:
        assert time.monotonic() < deadline, completed
        time.sleep(0.1)
    assert completed == sent
