"""Startup: ``make run``'s server command to a 200 from /healthz and from /readyz (issue 9).

Run as ``python -m bench.startup``. Twice with an empty numba cache (a fresh directory
in ``NUMBA_CACHE_DIR``: the kernels compile) and twice with the cache that the first
run left (they load). /healthz answers as soon as uvicorn listens; /readyz once the
kernels are ready. Targets: /healthz ≤ 30 s with an empty cache, ≤ 5 s with a warm one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_once(cache: str) -> tuple[float, float]:
    """Seconds from the process start to /healthz 200, and to /readyz 200."""
    port = free_port()
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "TENSORINIT_ACCESS_LOG": "off"}
    command = [
        sys.executable,
        "-m",
        "service.api.serve",
        "service.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    healthy = ready = None
    try:
        while ready is None and time.perf_counter() - t0 < 300:
            for path in ("/healthz", "/readyz"):
                try:
                    ok = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok and path == "/healthz" and healthy is None:
                    healthy = time.perf_counter() - t0
                if ok and path == "/readyz":
                    ready = time.perf_counter() - t0
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)
    if healthy is None or ready is None:
        raise RuntimeError("the server did not become ready within 300 s")
    return healthy, ready


def main() -> int:
    print(f"bench.startup · {os.cpu_count()} cores · python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        for label in ("empty cache", "empty cache", "warm cache", "warm cache"):
            if label == "empty cache":
                for entry in Path(cache).iterdir():
                    subprocess.run(["rm", "-rf", str(entry)], check=True)
            healthy, ready = start_once(cache)
            limit = 30.0 if label == "empty cache" else 5.0
            verdict = "PASS" if healthy <= limit else "MISS"
            print(f"  {label:<12} /healthz {healthy:6.2f} s  /readyz {ready:6.2f} s  → {verdict} (/healthz ≤ {limit:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
