"""The hostile-input corpus against a real uvicorn process: 4xx problems, health and flat memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .hostile import CORPUS, SMALL_QUERY, Hostile
from .live import LiveProcess

KEY = "corpus-key"
PROBLEM_BASE = "https://tensorinit.dev/problems/"
MiB = 1 << 20

ACCESS = [
    Hostile("no-key", "GET", f"/init?{SMALL_QUERY}", 401, "unauthorized", headers={"Authorization": ""}),
    Hostile("wrong-key", "GET", f"/init?{SMALL_QUERY}", 401, "unauthorized", headers={"Authorization": "Bearer corpus-kez"}),
    Hostile("basic-auth", "GET", "/metrics", 401, "unauthorized", headers={"Authorization": "Basic Y29ycHVzLWtleTo="}),
    Hostile("key-in-query-not-accepted", "GET", f"/init?{SMALL_QUERY}&api_key={KEY}", 401, "unauthorized", headers={"Authorization": ""}),
]
ROWS = CORPUS + ACCESS


class Corpus:
    def __init__(self, live: LiveProcess):
        self.live = live
        self.client = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"})
        self.rss_before = 0
        full = self.client.get(f"/init?{SMALL_QUERY}")
        assert full.status_code == 200
        self.full_sha256 = hashlib.sha256(full.content).hexdigest()
        self.full_size = len(full.content)
        # Warm every code path once, so that what is measured afterwards is growth, not first use.
        for row in ROWS:
            self.send(row)
        self.rss_before = live.rss()

    def send(self, row: Hostile) -> httpx.Response:
        headers = row.request_headers()
        if headers.get("Authorization") == "":
            del headers["Authorization"]
            with httpx.Client(base_url=self.live.url, timeout=60) as anonymous:
                return anonymous.request(row.method, row.path, content=row.body(), headers=headers)
        return self.client.request(row.method, row.path, content=row.body(), headers=headers)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    log = Path(tmp_path_factory.mktemp("hostile")) / "server.log"
    with LiveProcess(log, {"TENSORINIT_API_KEYS": KEY}) as live:
        c = Corpus(live)
        try:
            yield c
        finally:
            c.client.close()


def test_corpus_is_large_enough() -> None:
    assert len({row.id for row in ROWS}) == len(ROWS)
    assert sum(1 for row in ROWS if row.slug is not None and 400 <= row.status < 500) >= 60


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_hostile_request(corpus: Corpus, row: Hostile) -> None:
    response = corpus.send(row)
    assert response.status_code == row.status, response.text[:500]
    if row.slug is None:
        # Ignored as HTTP says it must be: the complete, correct file.
        assert hashlib.sha256(response.content).hexdigest() == corpus.full_sha256
        return
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + row.slug
    assert problem["status"] == row.status
    assert problem["request_id"] == response.headers["x-request-id"]
    assert len(response.content) < 64 * 1024, "a problem never echoes a hostile value in full"
    if row.status == 416:
        assert response.headers["content-range"] == f"bytes */{corpus.full_size}"


def test_server_healthy_and_memory_flat_after_corpus(corpus: Corpus) -> None:
    for row in ROWS:
        corpus.send(row)
    assert httpx.get(corpus.live.url + "/healthz", timeout=5).status_code == 200
    assert corpus.client.get(f"/init?{SMALL_QUERY}").status_code == 200
    growth = corpus.live.rss() - corpus.rss_before
    assert growth < 32 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over a pass of the corpus"
    assert corpus.live.peak_rss() < 500 * MiB
