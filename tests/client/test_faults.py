"""Retries, resume and integrity against a real misbehaving HTTP server (tests/client/faulty.py)."""

from __future__ import annotations

import builtins
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load
from tensorinit import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    Client,
    IntegrityError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    ValidationError,
)

from bench.client import free_port

from .faulty import Fault, digests_of, serve

FAST = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05)
SPECS = {"a": {"scheme": "normal", "shape": [512, 512]}, "b": {"scheme": "normal", "shape": [1000]}}


def _expect(body: bytes, got: dict[str, np.ndarray]) -> None:
    want = load(body)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype
        assert got[name].tobytes() == want[name].tobytes()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_transient_statuses_then_succeeds(small_body: bytes, status: int) -> None:
    script = [Fault(status=status, headers=(("Retry-After", "0"),)), Fault(status=status)]
    with serve(small_body, digests_of(small_body), script) as srv, Client(srv.url, max_retries=FAST) as client:
        _expect(small_body, client.init_many(SPECS))
        assert len(srv.seen) == 3


@pytest.mark.anyio
async def test_async_retries_then_succeeds(small_body: bytes) -> None:
    script = [Fault(status=503, headers=(("Retry-After", "0"),))] * 2
    with serve(small_body, digests_of(small_body), script) as srv:
        async with AsyncClient(srv.url, max_retries=FAST) as client:
            _expect(small_body, await client.init_many(SPECS))
        assert len(srv.seen) == 3


def test_retry_after_is_honoured(small_body: bytes) -> None:
    with (
        serve(small_body, digests_of(small_body), [Fault(status=503, headers=(("Retry-After", "1"),))]) as srv,
        Client(srv.url, max_retries=FAST) as client,
    ):
        start = time.monotonic()
        client.init_many(SPECS)
        assert time.monotonic() - start >= 1.0


def test_gives_up_after_max_retries_with_the_servers_message(small_body: bytes) -> None:
    script = [Fault(status=503, headers=(("Retry-After", "0"),))] * 5
    policy = RetryPolicy(max_retries=2, initial_delay=0.01)
    with serve(small_body, digests_of(small_body), script) as srv, Client(srv.url, max_retries=policy) as client:
        with pytest.raises(ServiceUnavailable) as info:
            client.init_many(SPECS)
        assert len(srv.seen) == 3
    err = info.value
    assert isinstance(err, ServerError)
    assert err.status_code == 503 and err.detail == "try later" and err.retry_after == 0
    assert err.__cause__ is None and err.__suppress_context__


def test_retry_after_beyond_the_cap_is_not_waited_for(small_body: bytes) -> None:
    with (
        serve(small_body, digests_of(small_body), [Fault(status=429, headers=(("Retry-After", "3600"),))]) as srv,
        Client(srv.url, max_retries=FAST) as client,
    ):
        with pytest.raises(RateLimitError) as info:
            client.init_many(SPECS)
        assert info.value.retry_after == 3600 and len(srv.seen) == 1


@pytest.mark.parametrize(("status", "error"), [(422, ValidationError), (500, ServerError)])
def test_never_retries_validation_errors_or_500(small_body: bytes, status: int, error: type[Exception]) -> None:
    with serve(small_body, digests_of(small_body), [Fault(status=status)]) as srv, Client(srv.url, max_retries=FAST) as client:
        with pytest.raises(error):
            client.init_many(SPECS)
        assert len(srv.seen) == 1


def test_resumes_a_cut_body_with_range_and_if_range(small_body: bytes) -> None:
    with (
        serve(small_body, digests_of(small_body), [Fault(cut=300_000), Fault(cut=100_000)]) as srv,
        Client(srv.url, max_retries=FAST) as client,
    ):
        _expect(small_body, client.init_many(SPECS, verify=True))
        inits = [s for s in srv.seen if s.path == "/init"]
    assert len(inits) == 3
    assert "range" not in inits[0].headers
    assert inits[1].headers["range"] == "bytes=300000-"
    assert inits[1].headers["if-range"] == '"faulty-etag"'
    assert inits[2].headers["range"] == "bytes=400000-"


@pytest.mark.anyio
async def test_async_resumes_a_cut_body(small_body: bytes) -> None:
    with serve(small_body, digests_of(small_body), [Fault(cut=500_000)]) as srv:
        async with AsyncClient(srv.url, max_retries=FAST) as client:
            _expect(small_body, await client.init_many(SPECS))
        assert srv.seen[1].headers["range"] == "bytes=500000-"


def test_cuts_that_bring_bytes_do_not_exhaust_retries(small_body: bytes) -> None:
    script = [Fault(cut=(i + 1) * 100_000) for i in range(6)]  # 6 cuts > max_retries, each one progressing
    with (
        serve(small_body, digests_of(small_body), script) as srv,
        Client(srv.url, max_retries=RetryPolicy(max_retries=1, initial_delay=0.01)) as client,
    ):
        _expect(small_body, client.init_many(SPECS))


def test_a_200_answer_to_a_range_request_restarts_the_body(small_body: bytes) -> None:
    with (
        serve(small_body, digests_of(small_body), [Fault(cut=200_000), Fault(ignore_range=True)]) as srv,
        Client(srv.url, max_retries=FAST) as client,
    ):
        _expect(small_body, client.init_many(SPECS))
        assert len(srv.seen) == 2


def test_a_truncated_body_is_never_returned(small_body: bytes) -> None:
    script = [Fault(cut=0)] * 10  # headers then nothing: no progress, so retries run out
    with serve(small_body, digests_of(small_body), script) as srv, Client(srv.url, max_retries=FAST) as client:
        with pytest.raises(APIConnectionError) as info:
            client.init_many(SPECS)
        assert len(srv.seen) == 4
    assert isinstance(info.value, builtins.ConnectionError)
    assert info.value.__suppress_context__


def test_verify_catches_a_corrupt_body(small_body: bytes) -> None:
    with (
        serve(small_body, digests_of(small_body), [Fault(corrupt=True)]) as srv,
        Client(srv.url, max_retries=FAST) as client,
        pytest.raises(IntegrityError, match="sha256 mismatch"),
    ):
        client.init_many(SPECS, verify=True)


def test_read_timeout_is_a_timeout_error(small_body: bytes) -> None:
    policy = RetryPolicy(max_retries=1, initial_delay=0.01)
    with (
        serve(small_body, digests_of(small_body), [Fault(delay=0.5)] * 2) as srv,
        Client(srv.url, timeout=0.1, max_retries=policy) as client,
    ):
        with pytest.raises(APITimeoutError) as info:
            client.init_many(SPECS)
        assert len(srv.seen) == 2
    assert isinstance(info.value, builtins.TimeoutError) and isinstance(info.value, APIConnectionError)


@pytest.mark.anyio
async def test_async_connection_refused() -> None:
    with serve(b"", {}) as srv:
        url = srv.url  # the port is closed once the block ends
    async with AsyncClient(url, max_retries=RetryPolicy(max_retries=1, initial_delay=0.01)) as client:
        with pytest.raises(APIConnectionError, match="ConnectError"):
            await client.version()


def test_download_resumes_into_the_file_and_reports_progress(small_body: bytes, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    with serve(small_body, digests_of(small_body), [Fault(cut=400_000)]) as srv, Client(srv.url, max_retries=FAST) as client:
        path = client.download(
            {"tensors": SPECS}, tmp_path / "m.safetensors", progress=lambda n, total: seen.append((n, total)), verify=True
        )
        assert srv.seen[1].headers["range"] == "bytes=400000-"
    assert path.read_bytes() == small_body
    assert not (tmp_path / "m.safetensors.part").exists()
    assert seen[-1] == (len(small_body), len(small_body))
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)


@pytest.mark.anyio
async def test_async_download_failure_leaves_no_file(small_body: bytes, tmp_path: Path) -> None:
    with serve(small_body, digests_of(small_body), [Fault(corrupt=True)]) as srv:
        async with AsyncClient(srv.url, max_retries=FAST) as client:
            with pytest.raises(IntegrityError):
                await client.download({"tensors": SPECS}, tmp_path / "m.safetensors", verify=True)
    assert list(tmp_path.iterdir()) == []


def test_an_injected_http_client_is_used_and_left_open(small_body: bytes) -> None:
    with serve(small_body, digests_of(small_body)) as srv, httpx.Client(headers={"X-Test": "1"}) as http:
        with Client(srv.url, http_client=http) as client:
            client.init_many(SPECS)
        assert not http.is_closed
        assert srv.seen[0].headers["x-test"] == "1"


def test_download_memory_stays_flat(tmp_path: Path) -> None:
    """64 MiB from the bench's bare server (another process), traced allocations stay under 4 MiB."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.client", "--mib", "64", "--serve", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "bench server did not start"
                time.sleep(0.1)
        with Client(f"http://127.0.0.1:{port}") as client:
            tracemalloc.start()
            try:
                path = client.download({"scheme": "zeros", "shape": [16 << 20], "name": "z"}, tmp_path / "z.safetensors", progress=False)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert path.stat().st_size > 64 << 20
        assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while downloading 64 MiB"
    finally:
        proc.terminate()
        proc.wait(10)
