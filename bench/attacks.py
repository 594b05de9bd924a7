"""``/healthz`` latency while one client attacks the service (issue 17, item 2), on loopback.

Run as ``python -m bench.attacks [--root DIR] [--seconds S]``: it starts ``python -m
service.api.serve`` from ``DIR`` (default: this checkout; ``--root /path/to/main`` measures
another tree the same way) on a free 127.0.0.1 port and, for each attack in turn, probes
``GET /healthz`` on a fresh connection every 20 ms (timeout 2 s, counted as failed), and
``GET /init/normal`` of 256×256 every 100 ms from another address (its statuses: a 503
means the attack starved the others). The attacks, each for S seconds (default 10):

* ``idle``: none (the baseline);
* ``header``: one connection after another sends a 64 MiB request header in 1 MiB writes;
* ``slowloris``: 256 connections each send a request line, then one header line a second
  (the server runs with ``TENSORINIT_HEADER_TIMEOUT_SECONDS=5``);
* ``stall``: two connections from 127.0.0.2 GET 1 GiB (16384×16384 float32), read 300
  bytes and stop reading (the server runs with ``TENSORINIT_WRITE_STALL_SECONDS=5``);
* ``plan``: two threads POST /plan, 1024 kind-less tensors × 1024 rules, the last one
  matching (the costliest that max_rules allows by default), back to back;
* ``plan8000``: one POST /plan with the issue's 8000 rules (422 where max_rules is 1024);
* ``recipe``: two threads POST /init, a recipe over 1024 tensors (1 MiB), back to back.

Everything is bounded: S seconds per attack, at most 64 MiB per header, 256 connections.

``python -m bench.attacks --protocols`` instead prices the bounds: requests/s of 64×64
``GET /init`` (bench.server's small case: curl, 4 in parallel, keep-alive) served with
our protocol, uvicorn's stock httptools one (no bounds) and its h11 one with the head
bounded by ``--h11-max-incomplete-event-size``, interleaved over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(root: Path, port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}:{root / 'clients' / 'python'}",
        "TENSORINIT_ACCESS_LOG": "off",
        "TENSORINIT_WRITE_STALL_SECONDS": "5",
        "TENSORINIT_HEADER_TIMEOUT_SECONDS": "5",
    }
    command = [sys.executable, "-m", "service.api.serve", "--port", str(port), "--log-level", "error", *extra]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not become ready")


def probe_healthz(port: int, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """``GET /healthz`` on a fresh connection every 20 ms: seconds from connect to the whole answer."""
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        began = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                failures.append(answer[:20].decode(errors="replace"))
            else:
                latencies.append(time.perf_counter() - began)
        except OSError as err:
            failures.append(type(err).__name__)
        stop.wait(0.02)


def probe_generating(port: int, stop: threading.Event, statuses: Counter[str]) -> None:
    """``GET /init/normal`` 256×256 every 100 ms (from 127.0.0.1; the stalling attacker is 127.0.0.2)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        seed = 0
        while not stop.is_set():
            seed += 1
            try:
                statuses[str(client.get(f"/init/normal?shape=256,256&seed={seed}").status_code)] += 1
            except httpx.TransportError as err:
                statuses[type(err).__name__] += 1
            stop.wait(0.1)


# -- the attacks: each runs until ``stop`` and returns a line about what it saw ---------------


def idle(port: int, stop: threading.Event) -> str:
    stop.wait()
    return ""


def header(port: int, stop: threading.Event) -> str:
    outcomes: Counter[str] = Counter()
    piece = b"a" * MiB
    while not stop.is_set():
        status = "unfinished"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Huge: ")
                for _ in range(64):
                    if stop.is_set():
                        break
                    sock.sendall(piece)
                else:
                    sock.sendall(b"\r\n\r\n")
                    status = sock.recv(64)[9:12].decode() or "closed"
        except OSError as err:
            status = type(err).__name__
        outcomes[status] += 1
    return f"64 MiB headers: {dict(outcomes)}"


def slowloris(port: int, stop: threading.Event, count: int = 256) -> str:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n")
        socks.append(sock)
    closed: set[int] = set()
    while not stop.wait(1.0):
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed.add(i)
    for sock in socks:
        sock.close()
    return f"{len(closed)}/{count} connections closed by the server"


def stall(port: int, stop: threading.Event, count: int = 2) -> str:
    socks = []
    answers = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))  # another client address than the probes'
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /init/normal?shape=16384,16384&seed=7 HTTP/1.1\r\nHost: bench\r\n\r\n")
        answers.append(sock.recv(300))
        socks.append(sock)
    stop.wait()
    outcomes: Counter[str] = Counter()
    for sock, first in zip(socks, answers, strict=True):
        sock.settimeout(0.5)
        status = first[9:12].decode()
        try:
            while sock.recv(1 << 20):
                pass
            outcomes[f"{status} closed by the server"] += 1
        except ConnectionResetError:
            outcomes[f"{status} reset by the server"] += 1
        except TimeoutError:
            outcomes[f"{status} still open"] += 1
        sock.close()
    return f"stalled GETs of 1 GiB: {dict(outcomes)}"


def _plan_body(rules: int) -> bytes:
    tensors = {f"blocks.{i}.w{i}": {"shape": [8, 8]} for i in range(1024)}
    listed = [[f"nomatch{i}.*", "he_normal"] for i in range(rules - 1)] + [["*", "he_normal"]]
    return json.dumps({"recipe": "torch", "tensors": tensors, "rules": listed}).encode()


def _posts(port: int, stop: threading.Event, path: str, body: bytes, threads: int, once: bool = False) -> str:
    statuses: Counter[str] = Counter()
    seconds: list[float] = []

    def loop() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while not stop.is_set():
                began = time.perf_counter()
                status = client.post(path, content=body, headers={"Content-Type": "application/json"}).status_code
                statuses[str(status)] += 1
                seconds.append(time.perf_counter() - began)
                if once:
                    return

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = f", {statistics.median(seconds):.2f} s each (median)" if seconds else ""
    return f"{sum(statuses.values())} requests {dict(statuses)}{took}"


def plan(port: int, stop: threading.Event) -> str:
    return _posts(port, stop, "/plan", _plan_body(1024), threads=2)


def plan8000(port: int, stop: threading.Event) -> str:
    return _posts(port, stop, "/plan", _plan_body(8000), threads=1, once=True)


def recipe(port: int, stop: threading.Event) -> str:
    body = json.dumps(
        {"recipe": "torch", "tensors": {f"blocks.{i}.w{i}": {"shape": [8, 8]} for i in range(1024)}, "rules": [["*", "he_normal"]]}
    )
    return _posts(port, stop, "/init", body.encode(), threads=2)


ATTACKS: dict[str, Callable[[int, threading.Event], str]] = {
    "idle": idle,
    "header": header,
    "slowloris": slowloris,
    "stall": stall,
    "plan": plan,
    "plan8000": plan8000,
    "recipe": recipe,
}


def run(port: int, name: str, seconds: float) -> None:
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    probes = [
        threading.Thread(target=probe_healthz, args=(port, stop, latencies, failures)),
        threading.Thread(target=probe_generating, args=(port, stop, statuses)),
    ]
    outcome: list[str] = []
    attacker = threading.Thread(target=lambda: outcome.append(ATTACKS[name](port, stop)))
    for thread in (*probes, attacker):
        thread.start()
    time.sleep(seconds)
    stop.set()
    attacker.join()
    for thread in probes:
        thread.join()
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms) if ms else float("nan")
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else float("nan")
    top = ms[-1] if ms else float("nan")
    print(
        f"{name:10} healthz n={len(ms) + len(failures):4} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {top:7.1f} ms  "
        f"failed {len(failures):3} | /init 256² {dict(statuses)} | {outcome[0] if outcome else ''}",
        flush=True,
    )
    time.sleep(1.0)


PROTOCOLS = {
    "ours (bounded httptools)": (),
    "uvicorn httptools (stock)": ("--http", "httptools"),
    "uvicorn h11, head bounded": ("--http", "h11", "--h11-max-incomplete-event-size", "65536"),
}


def protocols(root: Path, rounds: int = 8, count: int = 2000) -> None:
    from bench.server import small_load  # curl-driven, as bench.server measures the small case

    rates: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    p99s: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    servers = {}
    try:
        for name, extra in PROTOCOLS.items():
            port = free_port()
            servers[name] = (port, start(root, port, extra))
        names = list(servers)
        for port, _ in servers.values():  # a round to warm each up, not counted
            small_load(f"http://127.0.0.1:{port}/init?scheme=he_uniform&shape=64,64", count // 4, 4)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # each goes first in turn
                url = f"http://127.0.0.1:{servers[name][0]}/init?scheme=he_uniform&shape=64,64"
                rate, times = small_load(url, count, 4, first_seed=(r + 1) * count)
                rates[name].append(rate)
                p99s[name].append(times[int(0.99 * len(times))] * 1000)
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(15)
    ours = max(rates["ours (bounded httptools)"])
    for name in PROTOCOLS:
        print(
            f"{name:28} best {max(rates[name]):6.0f} req/s, median {statistics.median(rates[name]):6.0f} "
            f"(rounds {', '.join(f'{x:.0f}' for x in rates[name])}), best p99 {min(p99s[name]):5.1f} ms, "
            f"ours / this (best) {ours / max(rates[name]):.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose service is run (default: this one)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per attack")
    parser.add_argument("--protocols", action="store_true", help="price the bounds instead (small GETs per protocol)")
    parser.add_argument("attacks", nargs="*", help=f"some of {', '.join(ATTACKS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}; known: {', '.join(ATTACKS)}")
    if args.protocols:
        protocols(args.root.resolve())
        return
    port = free_port()
    process = start(args.root.resolve(), port)
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=args.root, capture_output=True, text=True
        ).stdout.strip()
        print(f"service from {args.root} ({revision}) on 127.0.0.1:{port}, {args.seconds:g} s per attack", flush=True)
        for name in args.attacks or ATTACKS:
            run(port, name, args.seconds)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
