"""One connection must neither stall the event loop nor starve everyone (issue 17, item 2).

Against the service as ``make run`` starts it (``python -m service.api.serve``: the
protocol of service/api/protocol.py, the app's admission), on loopback, with the
attacker's inputs from the issue and its deadlines set short: a huge request head, a
head sent too slowly, idle connections, a client that stops reading a 1 GiB answer,
and the costliest /plan and recipe requests the limits allow while ``/healthz`` is
probed. An attacker connects from 127.0.0.2, another client address than the others'.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.serve import HTTP_PROTOCOL, command
from service.api.settings import Settings
from service.core.architectures.registry import MAX_TENSORS

from .live import LiveProcess

STALL_SECONDS = 1.5
HEADER_SECONDS = 1.5
BODY_SECONDS = 1.5
KEEP_ALIVE_SECONDS = 1
MAX_HEADER = Settings().max_header_bytes
ENV = {
    "TENSORINIT_WRITE_STALL_SECONDS": str(STALL_SECONDS),
    "TENSORINIT_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
    "TENSORINIT_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
    "TENSORINIT_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS),
    "TENSORINIT_ACCESS_LOG": "off",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    with LiveProcess(tmp_path_factory.mktemp("connections") / "serve.log", ENV) as process:
        yield process


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or resets it, having answered)."""
    with connect(port) as sock:
        answer = b""
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionError:  # refused mid-send (reset, broken pipe): what it answered is still readable
            with contextlib.suppress(OSError):
                answer += sock.recv(65536)
        return answer


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading what it sends), or None if it did not within ``seconds``."""
    began = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - began


def head(size: int, extra: bytes = b"") -> bytes:
    """A GET /healthz whose head is exactly ``size`` bytes (a padding header fills it), then ``extra``."""
    start, end = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end + extra


# -- a huge head --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (head(1024), b"200"),
        (head(MAX_HEADER), b"200"),  # the bound itself is allowed
        (head(MAX_HEADER + 1), b"431"),
        (head(4 * MAX_HEADER), b"431"),
        (head(32 << 20), b"431"),  # the attack, smaller: refused after 64 KiB, not parsed for seconds
        # A body in the same write as a head under the bound is not the head's.
        (
            b"POST /plan HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
            + b" " * 200000,
            b"400",
        ),
        (head(200) * 2, b"200"),  # pipelined: the second head is counted on its own
    ],
    ids=["small", "at-bound", "bound+1", "4x", "32MiB", "body-after-head", "pipelined"],
)
def test_a_head_past_the_bound_is_431(live: LiveProcess, data: bytes, status: bytes) -> None:
    answer = exchange(live.port, data)
    assert answer[9:12] == status, answer[:300]
    if status == b"431":
        assert b"application/problem+json" in answer
        assert str(MAX_HEADER).encode() in answer
    assert httpx.get(live.url + "/healthz", timeout=2).status_code == 200


def test_every_launch_path_runs_the_bounded_protocol(tmp_path: Path) -> None:
    """``make run``, deploy/cluster.py and the Dockerfile all run service.api.serve; with workers too."""
    args = command([])
    assert args[args.index("--http") + 1] == HTTP_PROTOCOL
    with LiveProcess(tmp_path / "workers.log", {**ENV, "TENSORINIT_WORKERS": "2"}) as workers:
        for _ in range(4):  # connections land on either worker
            assert exchange(workers.port, head(MAX_HEADER + 1))[9:12] == b"431"


# -- slow and idle connections --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\n", b"GET /hea"],
    ids=["nothing", "request-line", "half-a-line"],
)
def test_a_head_not_complete_in_time_is_closed(live: LiveProcess, sent: bytes) -> None:
    with connect(live.port) as sock:
        sock.sendall(sent)
        seconds = closed_within(sock, HEADER_SECONDS + 3)
    assert seconds is not None and seconds >= HEADER_SECONDS - 0.2


def test_slowloris_trickling_header_lines_is_closed(live: LiveProcess) -> None:
    socks = [connect(live.port) for _ in range(16)]
    began = time.monotonic()
    closed: set[int] = set()
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    while len(closed) < len(socks) and time.monotonic() - began < HEADER_SECONDS + 3:
        for i, sock in enumerate(socks):
            if i not in closed:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                    sock.settimeout(0.01)
                    if sock.recv(1) == b"":
                        closed.add(i)
                except TimeoutError:
                    pass
                except OSError:
                    closed.add(i)
        time.sleep(0.2)
    for sock in socks:
        sock.close()
    assert len(closed) == len(socks)
    assert time.monotonic() - began >= HEADER_SECONDS - 0.2


@pytest.mark.parametrize("path", ["/init", "/checkpoint"])  # a tensor request, and a checkpoint's config
@pytest.mark.parametrize("trickle", [False, True], ids=["stopped", "a-byte-at-a-time"])
def test_a_body_not_complete_in_time_is_408_and_closed(live: LiveProcess, path: str, trickle: bool) -> None:
    body = json.dumps({"scheme": "he_normal", "shape": [4, 4], "name": "w", "padding": "x" * 200}).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(live.port) as sock:
        sock.sendall(head.encode() + body[:10])
        began, answer, sent = time.monotonic(), b"", 10
        sock.settimeout(0.1)
        while time.monotonic() - began < BODY_SECONDS + 3:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if trickle and sent < len(body):
                    sock.sendall(body[sent : sent + 1])  # one byte per 0.1 s: the whole body would take 20 s
                    sent += 1
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        seconds = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    problem = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert problem["status"] == 408 and "TENSORINIT_BODY_TIMEOUT_SECONDS" in problem["detail"]
    assert BODY_SECONDS - 0.2 <= seconds < BODY_SECONDS + 3
    assert httpx.get(live.url + "/healthz", timeout=5).status_code == 200


def test_a_body_sent_whole_in_time_is_answered(live: LiveProcess) -> None:
    """The deadline is per request: a keep-alive connection's later requests get their own."""
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for _ in range(3):
            response = client.post("/stats", json={"scheme": "he_normal", "shape": [4, 4], "name": "w"})
            assert response.status_code == 200
            time.sleep(BODY_SECONDS / 2)  # over the three, longer than one deadline


def test_an_idle_keep_alive_connection_is_closed(live: LiveProcess) -> None:
    with connect(live.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        seconds = closed_within(sock, KEEP_ALIVE_SECONDS + 3)
    assert seconds is not None


# -- a client that stops reading ------------------------------------------------------------------


def _gauges(live: LiveProcess) -> tuple[float, float]:
    text = httpx.get(live.url + "/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tensorinit_generations_in_flight", "tensorinit_generation_bytes_in_flight"):
            values[name] = float(value)
    return values["tensorinit_generations_in_flight"], values["tensorinit_generation_bytes_in_flight"]


def test_a_client_that_stops_reading_is_aborted_and_starves_no_one(live: LiveProcess) -> None:
    stalled = []
    for seed in (1, 2):  # two, as through nginx in the issue: the second waits on its own client's share
        sock = connect(live.port, source="127.0.0.2")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /init/normal?shape=16384,16384&seed={seed} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        stalled.append(sock)
    first = stalled[0].recv(300)
    assert first.startswith(b"HTTP/1.1 200"), first
    began = time.monotonic()
    # While it stalls, everyone else is admitted at once: no 503, well within the admission timeout.
    with httpx.Client(base_url=live.url, timeout=5) as client:
        for seed in range(6):
            r = client.get(f"/init/normal?shape=256,256&seed={seed}")
            assert r.status_code == 200, r.text
            assert len(r.content) > 256 * 256 * 4
        assert time.monotonic() - began < STALL_SECONDS  # all of that happened while the stream stalled
        # ... and it is aborted after STALL_SECONDS without progress, releasing its slot and bytes.
        assert closed_within(stalled[0], STALL_SECONDS + 5) is not None
        deadline = time.monotonic() + 5
        while _gauges(live) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gauges(live) == (0, 0)
    second = stalled[1].recv(300)  # over the attacker's own share: it waited, then 503, not the others
    assert second.startswith((b"HTTP/1.1 503", b"HTTP/1.1 200")), second
    for sock in stalled:
        sock.close()


# -- CPU work off the event loop ------------------------------------------------------------------


def _plan_body(tensors: int, rules: int) -> bytes:
    """Kind-less tensors and rules of which only the last matches: every tensor tries every rule."""
    manifest = {f"blocks.{i}.w{i}": {"shape": [8, 8]} for i in range(tensors)}
    listed = [[f"nomatch{i}.*", "he_normal"] for i in range(rules - 1)] + [["*", "he_normal"]]
    return json.dumps({"recipe": "torch", "tensors": manifest, "rules": listed}).encode()


def test_rules_past_max_rules_are_422_naming_the_field(live: LiveProcess) -> None:
    limit = Settings().max_rules
    r = httpx.post(live.url + "/plan", content=_plan_body(4, limit + 1), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["path"] == ["rules"]
    assert f"at most {limit} rules (max_rules)" in r.json()["detail"]


def test_healthz_stays_fast_while_the_costliest_plan_and_recipe_run(live: LiveProcess) -> None:
    settings = Settings()
    costly = [
        ("/plan", _plan_body(settings.max_batch_tensors, settings.max_rules)),
        ("/init", _plan_body(settings.max_batch_tensors, settings.max_rules)),
    ]
    stop = threading.Event()
    statuses: list[int] = []

    def attack(path: str, body: bytes) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.post(path, content=body, headers={"Content-Type": "application/json"}).status_code)

    attackers = [threading.Thread(target=attack, args=item) for item in costly]
    for thread in attackers:
        thread.start()
    latencies = []
    try:
        time.sleep(0.3)  # the attack under way
        with httpx.Client(base_url=live.url, timeout=2) as probe:
            began = time.monotonic()
            while time.monotonic() - began < 4 or not statuses:
                t0 = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(60)
    assert statuses and set(statuses) == {200}
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    # bench.attacks measured 55-60 ms on two busy cores (docs/benchmarks.md); on the loop it was seconds.
    assert p99 < 0.25, f"/healthz p99 {p99 * 1000:.0f} ms over {len(latencies)} probes"


def test_healthz_stays_fast_while_the_costliest_checkpoint_plan_is_made_and_sent(live: LiveProcess) -> None:
    # A llama of 7270 layers: 9 tensors a layer and 3 more, 65,433 of MAX_TENSORS 65,536: a 22 MB plan.
    # Its JSON was encoded on the event loop, which then answered nothing for 2.5 s.
    layers = (MAX_TENSORS - 3) // 9
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 8,
              "intermediate_size": 16, "num_hidden_layers": layers, "num_attention_heads": 2, "dtype": "bfloat16"}  # fmt: skip
    sizes: list[int] = []
    stop = threading.Event()

    def attack() -> None:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            while not stop.is_set():
                r = client.post("/checkpoint", json={"config": config, "seed": len(sizes) % 2})  # a cached plan, and a new one
                assert r.status_code == 200, r.text
                sizes.append(len(r.content))

    attacker = threading.Thread(target=attack)
    attacker.start()
    latencies = []
    try:
        with httpx.Client(base_url=live.url, timeout=5) as probe:
            began = time.monotonic()
            while time.monotonic() - began < 4 or len(sizes) < 2:
                t0 = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)
                assert time.monotonic() - began < 60, "the plans did not come"
    finally:
        stop.set()
        attacker.join(60)
    assert min(sizes) > 20_000_000
    # Made and rendered on the request-work thread, the worst probe measured 0.21-0.39 s (a collector's
    # pass over the plan's objects holds the GIL); on the loop it was 2.5 s.
    assert max(latencies) < 1.5, f"/healthz's worst probe {max(latencies) * 1000:.0f} ms of {len(latencies)}"
