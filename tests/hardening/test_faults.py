"""Faults against a real uvicorn process: a client that leaves, SIGTERM, and kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from safetensors import numpy as safetensors_numpy

from tests.metrics import sample

from .live import LiveProcess

MiB = 1 << 20
KEY = "fault-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
AUTH_LINE = f"Authorization: Bearer {KEY}\r\n"
CHUNK_BYTES = 4 * MiB  # one job of blocks in service.safetensors_stream
PREFETCH = 4  # jobs generated ahead of the socket (Settings.prefetch_blocks)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def data_sha256(body: bytes) -> str:
    """The sha256 of the data section of a one-tensor safetensors file."""
    (header_len,) = struct.unpack("<Q", body[:8])
    json.loads(body[8 : 8 + header_len])
    return hashlib.sha256(body[8 + header_len :]).hexdigest()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveProcess]:
    with LiveProcess(tmp_path / "server.log", {"TENSORINIT_API_KEYS": KEY}, graceful_seconds=10) as server:
        yield server


def metrics(live: LiveProcess) -> str:
    return httpx.get(live.url + "/metrics", headers=AUTH, timeout=10).text


def test_disconnect_mid_stream_stops_generation(live: LiveProcess) -> None:
    size = 256 * MiB
    query = f"scheme=he_normal&shape=8192,{size // 4 // 8192}&seed=7"
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /init?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    received = 0
    while received < 8 * MiB:
        chunk = sock.recv(1 << 16)
        assert chunk
        received += len(chunk)
    sock.close()

    def aborted() -> bool:
        return sample(metrics(live), "tensorinit_streams_total", outcome="aborted") == 1

    assert wait_for(aborted)
    text = metrics(live)
    assert sample(text, "tensorinit_streams_disconnected_total") == 1
    assert sample(text, "tensorinit_generations_in_flight") == 0
    blocks = sample(text, "tensorinit_blocks_generated_total")
    time.sleep(1.0)
    assert sample(metrics(live), "tensorinit_blocks_generated_total") == blocks, "generation went on after the disconnect"
    # What was generated: what the client read, what the sockets held, and the jobs in flight.
    generated = sample(text, "tensorinit_bytes_generated_total")
    socket_slack = 8 * MiB
    assert generated <= received + socket_slack + (PREFETCH + 1) * CHUNK_BYTES
    assert generated < size / 4
    assert httpx.get(live.url + "/healthz", timeout=5).status_code == 200


def test_sigterm_finishes_in_flight_stream_refuses_new_and_exits_0(live: LiveProcess) -> None:
    size = 96 * MiB
    query = f"scheme=he_uniform&shape=4096,{size // 4 // 4096}&seed=3"
    expected = httpx.get(f"{live.url}/stats?{query}", headers=AUTH, timeout=60).json()["tensors"]["weight"]["sha256"]
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as client, client.stream("GET", f"/init?{query}") as response:
        assert response.status_code == 200
        length = int(response.headers["content-length"])
        chunks = response.iter_bytes()
        body = bytearray(next(chunks))
        live.terminate()
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", live.port), timeout=2).close()
        for chunk in chunks:
            body.extend(chunk)
    assert len(body) == length
    assert data_sha256(bytes(body)) == expected
    assert live.wait(live.graceful_seconds + 5) == 0


def test_kill_9_mid_stream_gives_a_short_body(live: LiveProcess) -> None:
    query = "scheme=he_normal&shape=8192,8192&seed=1"
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as client, client.stream("GET", f"/init?{query}") as response:
        length = int(response.headers["content-length"])
        received = 0

        def read_all() -> None:
            nonlocal received
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received >= 4 * MiB and live.process is not None and live.process.poll() is None:
                    live.kill()

        with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|peer closed"):
            read_all()
    assert 4 * MiB <= received < length


def test_client_resumes_after_kill_9_and_restart(live: LiveProcess, tmp_path: Path) -> None:
    tensorinit = pytest.importorskip("tensorinit")
    request = {"scheme": "he_normal", "shape": [4096, 8192], "seed": 11, "name": "weight"}  # 128 MiB
    restarted = threading.Event()

    def progress(received: int, total: int | None) -> None:
        if received >= 16 * MiB and not restarted.is_set():
            restarted.set()
            live.kill()
            live.start()  # the same port, a new process

    policy = tensorinit.RetryPolicy(max_retries=5, initial_delay=0.2, max_delay=1.0)
    with tensorinit.Client(live.url, api_key=KEY, max_retries=policy, timeout=60) as client:
        path = client.download(request, tmp_path / "w.safetensors", progress=progress, verify=True)
    assert restarted.is_set()
    loaded = safetensors_numpy.load_file(str(path))
    assert loaded["weight"].shape == (4096, 8192)
    text = metrics(live)
    # The new process answered the resumed part: a 206 for the remaining bytes.
    assert sample(text, "tensorinit_http_requests_total", method="POST", route="/init", status="206") == 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_and_leave(port: int, request: str, wait: float) -> None:
    """Send ``request`` on a fresh connection, wait, and close it without reading."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request.encode())
    time.sleep(wait)
    sock.close()


def test_disconnect_mid_stats_stops_the_pass(live: LiveProcess) -> None:
    """A client that leaves /stats of a large tensor frees the cores within a block, not at the end of the pass."""
    query = "scheme=he_normal&shape=8192,8192&seed=11"  # 256 MiB: seconds of work on two cores
    send_and_leave(live.port, f"GET /stats?{query} HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}\r\n", 0.3)
    time.sleep(0.3)  # the blocks in flight finish
    before = cpu_seconds(live.pid)
    time.sleep(1.0)
    assert cpu_seconds(live.pid) - before < 0.25, "the /stats pass went on after its client left"
    assert wait_for(lambda: sample(metrics(live), "tensorinit_generations_in_flight") == 0)
    assert httpx.get(live.url + "/healthz", timeout=5).status_code == 200


def test_leaving_while_waiting_for_admission_gives_the_place_up(tmp_path: Path) -> None:
    env = {"TENSORINIT_API_KEYS": KEY, "TENSORINIT_MAX_CONCURRENT_GENERATIONS": "1", "TENSORINIT_ADMISSION_TIMEOUT_SECONDS": "30"}
    with LiveProcess(tmp_path / "server.log", env) as server:
        holder = socket.create_connection(
            ("127.0.0.1", server.port)
        )  # holds the one slot: /stats of 151M elements (under max_stats_flops), seconds
        holder.sendall(f"GET /stats?scheme=he_normal&shape=12288,12288&seed=1 HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}\r\n".encode())
        assert wait_for(lambda: sample(metrics(server), "tensorinit_generations_in_flight") == 1)
        for path in ("/init?scheme=he_normal&shape=4096,4096", "/stats?scheme=he_uniform&shape=4096,4096"):
            with socket.create_connection(("127.0.0.1", server.port)) as waiter:
                waiter.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}\r\n".encode())
                assert wait_for(lambda: sample(metrics(server), "tensorinit_generations_waiting") == 1)
            # Well before the 30 s admission timeout, and while the holder still runs: the
            # place is given up because its client left, not because a slot came free.
            assert wait_for(lambda: sample(metrics(server), "tensorinit_generations_waiting") == 0, seconds=3)
            assert sample(metrics(server), "tensorinit_generations_in_flight") == 1
        holder.close()
        assert wait_for(lambda: sample(metrics(server), "tensorinit_generations_in_flight") == 0)


def test_a_matrix_stats_client_that_leaves_keeps_its_slot_until_the_work_stops(live: LiveProcess) -> None:
    """Building an orthogonal matrix cannot be interrupted: its slot stays held until it ends, then nothing runs.

    3072²: the largest square within max_stats_flops is 3150² (4096² is refused before any work).
    """
    send_and_leave(live.port, f"GET /stats?scheme=orthogonal&shape=3072,3072 HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}\r\n", 0.3)
    assert sample(metrics(live), "tensorinit_generations_in_flight") == 1  # still counted: the matrix is being built
    assert wait_for(lambda: sample(metrics(live), "tensorinit_generations_in_flight") == 0, seconds=30)
    before = cpu_seconds(live.pid)
    time.sleep(0.5)
    assert cpu_seconds(live.pid) - before < 0.2, "work went on after its slot was given back"


def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(live: LiveProcess) -> None:
    for path in ("/stats", "/init"):
        body = b'{"scheme": "he_normal", "shape": [64, 64]}'
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n"
        send_and_leave(live.port, head + body.decode(), 0.2)  # 100 bytes short, then gone

    def counted() -> bool:
        return sample(metrics(live), "tensorinit_http_requests_total", method="POST", route="/init", status="499") == 1

    assert wait_for(counted)
    text = metrics(live)
    assert sample(text, "tensorinit_http_requests_total", method="POST", route="/stats", status="499") == 1
    assert 'status="500"' not in text
