"""Streaming behaviour against a real uvicorn server on a loopback port.

The in-process transport buffers whole bodies, so Content-Length, Range, 304, HEAD,
large tensors, disconnects and health during a stream are tested here.
"""

from __future__ import annotations

import hashlib
import socket
import statistics
import threading
import time

import httpx
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch

from service.core import generate, resolve
from tests.conftest import LiveServer

QUERY = {"scheme": "he_normal", "shape": "300,1000", "seed": "5"}


@pytest.fixture(scope="module")
def full(live_server: LiveServer) -> bytes:
    with httpx.Client(base_url=live_server.url) as client:
        return client.get("/init", params=QUERY).content


def test_streamed_file_loads_and_equals_the_engine(live_http: httpx.Client, full: bytes) -> None:
    spec = resolve("he_normal", [300, 1000], seed=5)
    np.testing.assert_array_equal(safetensors.numpy.load(full)["weight"], generate(spec))
    np.testing.assert_array_equal(safetensors.torch.load(full)["weight"].numpy(), generate(spec))
    post = live_http.post("/init", json={"scheme": "he_normal", "shape": [300, 1000], "seed": 5})
    assert post.content == full


def test_range_table(live_http: httpx.Client, full: bytes) -> None:
    size = len(full)
    table = [
        ("bytes=0-99", 206, (0, 100)),
        ("bytes=100-", 206, (100, size)),
        ("bytes=-1000", 206, (size - 1000, size)),
        (f"bytes=1048000-{1048576 + 100}", 206, (1048000, 1048577 + 100)),
        (f"bytes=0-{size + 50}", 206, (0, size)),
        ("pages=1-2", 200, (0, size)),  # another unit: ignored
    ]
    for header, status, (lo, hi) in table:
        r = live_http.get("/init", params=QUERY, headers={"Range": header})
        assert r.status_code == status, header
        assert r.content == full[lo:hi], header
        assert int(r.headers["content-length"]) == hi - lo
        if status == 206:
            assert r.headers["content-range"] == f"bytes {lo}-{hi - 1}/{size}"


RANGE_416 = [
    ("size", "selects no byte"),
    ("-0", "selects no byte"),
    ("0-1,4-5", "2 ranges given"),
    ("9-2", "reversed"),
    ("abc", "is not a byte range"),
    ("", "no range given"),
    (f"0-{2**64}", "overflows 64 bits"),
]


@pytest.mark.parametrize(("spec", "reason"), RANGE_416, ids=[s or "empty" for s, _ in RANGE_416])
def test_range_416_says_what_was_wrong(live_http: httpx.Client, full: bytes, spec: str, reason: str) -> None:
    header = "bytes=" + (str(len(full)) + "-" if spec == "size" else spec)
    for method in ("HEAD", "GET"):
        r = live_http.request(method, "/init", params=QUERY, headers={"Range": header})
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{len(full)}"
        assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/range-not-satisfiable") and reason in problem["detail"]
    if reason != "selects no byte":
        assert "bytes=first-last, bytes=first- or bytes=-suffix_length" in problem["detail"]


def test_if_range_and_if_none_match(live_http: httpx.Client, full: bytes) -> None:
    etag = live_http.head("/init", params=QUERY).headers["etag"]
    partial = live_http.get("/init", params=QUERY, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert partial.status_code == 206 and partial.content == full[10:20]
    for stale in ('"old"', "garbage", f"W/{etag}"):  # not our strong ETag: the whole file
        r = live_http.get("/init", params=QUERY, headers={"Range": "bytes=10-19", "If-Range": stale})
        assert r.status_code == 200 and r.content == full, stale
    # A stale If-Range lifts the range, so whether it is satisfiable no longer matters; a malformed one is refused.
    beyond = live_http.get("/init", params=QUERY, headers={"Range": f"bytes={len(full)}-", "If-Range": '"old"'})
    assert beyond.status_code == 200 and beyond.content == full
    assert live_http.get("/init", params=QUERY, headers={"Range": "bytes=9-2", "If-Range": '"old"'}).status_code == 416
    for header in (etag, f'"x", W/{etag}', "*"):
        r = live_http.get("/init", params=QUERY, headers={"If-None-Match": header})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag and r.headers["cache-control"].endswith("immutable")
    # If-None-Match comes before Range (RFC 9110 §13.2.2): a match is 304 even for a range beyond the end.
    assert live_http.get("/init", params=QUERY, headers={"If-None-Match": etag, "Range": f"bytes={len(full)}-"}).status_code == 304
    assert live_http.get("/init", params=QUERY, headers={"If-None-Match": '"other"'}).status_code == 200
    for garbage in ("garbage", '"unterminated', f"{etag[1:-1]}"):
        r = live_http.get("/init", params=QUERY, headers={"If-None-Match": garbage})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", garbage
        problem = r.json()
        assert problem["type"].endswith("/invalid-request") and "If-None-Match" in problem["detail"]
        assert problem["errors"][0]["path"] == ["headers", "If-None-Match"]


def test_head_gives_the_headers_without_a_body(live_http: httpx.Client, full: bytes) -> None:
    head = live_http.head("/init", params=QUERY)
    get = live_http.get("/init", params=QUERY)
    assert head.status_code == 200 and head.content == b""
    for key in ("etag", "content-length", "content-disposition", "cache-control", "accept-ranges", "content-type"):
        assert head.headers[key] == get.headers[key]
    ranged = live_http.head("/init", params=QUERY, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["content-length"] == "10"


def test_post_range_serves_a_slice_of_a_batch(live_http: httpx.Client) -> None:
    body = {"tensors": {"a": {"scheme": "he_uniform", "shape": [600, 600]}, "b": {"scheme": "zeros", "shape": [10]}}}
    whole = live_http.post("/init", json=body).content
    part = live_http.post("/init", json=body, headers={"Range": "bytes=1000-1500000"})
    assert part.status_code == 206 and part.content == whole[1000:1500001]


@pytest.mark.slow
def test_64_mib_tensor_streams_with_exact_length(live_server: LiveServer) -> None:
    spec = resolve("he_uniform", [4096, 4096], seed=1)
    digest = hashlib.sha256()
    received = 0
    with (
        httpx.Client(base_url=live_server.url, timeout=120) as client,
        client.stream("GET", "/init", params={"scheme": "he_uniform", "shape": "4096,4096", "seed": "1"}) as r,
    ):
        assert r.status_code == 200
        length = int(r.headers["content-length"])
        header = b""
        for chunk in r.iter_raw(1 << 20):
            if len(header) < 8:
                header += chunk[:8]
            received += len(chunk)
            digest.update(chunk)
    assert received == length == 64 * 1024 * 1024 + int.from_bytes(header[:8], "little") + 8
    stats = httpx.post(f"{live_server.url}/stats", json={"scheme": "he_uniform", "shape": [4096, 4096], "seed": 1}, timeout=120).json()
    served = httpx.get(
        f"{live_server.url}/init",
        params={"scheme": "he_uniform", "shape": "4096,4096", "seed": "1"},
        headers={"Range": f"bytes={length - 64 * 1024 * 1024}-"},
        timeout=120,
    )
    assert (
        stats["tensors"]["weight"]["sha256"]
        == hashlib.sha256(served.content).hexdigest()
        == hashlib.sha256(generate(spec).tobytes()).hexdigest()
    )


def _wait_stable(read: object, seconds: float = 0.3, timeout: float = 10.0) -> int:
    assert callable(read)
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = read()
        if now == last:
            return int(now)
        last = now
    raise AssertionError("generation did not stop")


def test_disconnect_stops_generation(live_server: LiveServer) -> None:
    counters = live_server.app.state.counters
    # The counters are the session server's: an earlier test's stream may still be
    # finishing its last jobs, so start from a count that has stopped moving.
    before_blocks = _wait_stable(lambda: counters.blocks_generated)
    before_aborted = counters.streams_aborted
    total_blocks = 1024  # 1 GiB of float32
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.sendall(b"GET /init?scheme=he_normal&shape=16384,16384 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        while got < 4 << 20:
            got += len(sock.recv(1 << 16))
    generated = _wait_stable(lambda: counters.blocks_generated) - before_blocks
    deadline = time.monotonic() + 5
    while counters.streams_aborted == before_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counters.streams_aborted == before_aborted + 1
    # What was read, plus socket buffers, plus the prefetch window: far from the 1024 blocks.
    print(f"blocks generated before the stream stopped: {generated}")
    assert generated < 32 < total_blocks, generated


def test_healthz_stays_fast_while_a_big_stream_runs(live_server: LiveServer) -> None:
    stop = threading.Event()

    def download() -> None:
        with (
            httpx.Client(base_url=live_server.url, timeout=60) as client,
            client.stream("GET", "/init", params={"scheme": "he_normal", "shape": "16384,16384"}) as r,
        ):
            for _ in r.iter_raw(1 << 20):
                if stop.is_set():
                    break

    worker = threading.Thread(target=download)
    worker.start()
    try:
        time.sleep(0.3)
        latencies = []
        with httpx.Client(base_url=live_server.url, timeout=5) as client:
            for _ in range(20):
                t0 = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
        assert worker.is_alive(), "the stream should still be running"
    finally:
        stop.set()
        worker.join(30)
    assert statistics.median(latencies) < 0.05, latencies
    # One outlier of the 20 is allowed: on CI's two shared cores a single probe once took 0.74 s
    # (the other 19: 2-14 ms). A loop blocked by the stream would slow many probes, not one.
    assert sorted(latencies)[-2] < 0.5, latencies
