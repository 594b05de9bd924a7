"""What nginx's key check costs a cache hit (issue 17): small hits, keys off against keys on, in one run.

Run as ``python -m bench.keys`` (nginx installed: ``make nginx``). Two clusters of
:class:`deploy.cluster.Cluster` on 127.0.0.1, as ``make cluster`` runs them: one without
API keys (nginx asks nothing: ``auth_request off``), one with ``TENSORINIT_API_KEYS``
(every answer from the cache first asks a replica's ``GET /auth``). The same stored
64×64 he_uniform answers are fetched from both by curl (``--parallel-max 8``,
keep-alive, the key as a bearer header on the keyed one), in interleaved rounds: the
requests/s, p50 and p99 of each and the median of the per-round ratios. Misses are not
measured: a miss costs a replica far more than the check.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.server import percentile
from deploy.cluster import Cluster

SMALL = "/init?scheme=he_uniform&shape=64,64"
KEY = "bench-key"


@contextmanager
def cluster(state: Path, keys: bool, ports: list[int]) -> Iterator[Cluster]:
    state.mkdir(mode=0o755)
    env = {"TENSORINIT_ACCESS_LOG": "off", **({"TENSORINIT_API_KEYS": KEY} if keys else {})}
    with Cluster(ports[0], ports[1:], state, env=env) as running:
        yield running


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now (held together while chosen: two clusters must not share one)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def hits(url: str, count: int, headers: dict[str, str], stored: bool = True) -> tuple[float, list[float]]:
    """requests/s and sorted latencies of ``count`` GETs of seeds 0 .. count - 1, curl in parallel; all hits if ``stored``."""
    with tempfile.NamedTemporaryFile("w", suffix=".curlrc") as cfg:
        for name, value in headers.items():  # once: curl sends every header line with every URL
            cfg.write(f'header = "{name}: {value}"\n')
        for i in range(count):
            cfg.write(f'url = "{url}{SMALL}&seed={i}"\noutput = "/dev/null"\n')
        cfg.flush()
        t0 = time.perf_counter()
        out = subprocess.run(
            ["curl", "-s", "-Z", "--parallel-max", "8", "-K", cfg.name, "-w", "%{http_code} %{time_total} %header{x-cache-status}\\n"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        wall = time.perf_counter() - t0
    lines = [line.split() for line in out.splitlines()]
    assert len(lines) == count
    assert all(code == "200" for code, _, _ in lines), sorted({(c, s) for c, _, s in lines})
    assert not stored or all(status == "HIT" for _, _, status in lines), "every request a hit"
    return count / wall, sorted(float(t) for _, t, _ in lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="per round and cluster")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="tensorinit-bench-keys-") as tmp:
        os.chmod(tmp, 0o755)
        ports = free_ports(6)
        with cluster(Path(tmp) / "open", False, ports[:3]) as open_, cluster(Path(tmp) / "keyed", True, ports[3:]) as keyed:
            cases = {"keys off": (open_.url, {}), "keys on": (keyed.url, {"Authorization": f"Bearer {KEY}"})}
            for url, headers in cases.values():
                hits(url, args.requests, headers, stored=False)  # stores them: every measured request is a hit
                hits(url, args.requests, headers)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in cases}
            latencies: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, (url, headers) in cases.items():
                    rate, times = hits(url, args.requests, headers)
                    rates[name].append(rate)
                    latencies[name] += times
    print(f"{args.requests} hits x {args.rounds} rounds per case, 64x64 float32, curl --parallel-max 8, 2 replicas each")
    for name in cases:
        total = len(rates[name]) / sum(1 / r for r in rates[name])
        lat = latencies[name]
        print(f"  {name}: {total:.0f} req/s, p50 {percentile(lat, 0.5) * 1e3:.2f} ms, p99 {percentile(lat, 0.99) * 1e3:.2f} ms")
    median = statistics.median(on / off for on, off in zip(rates["keys on"], rates["keys off"], strict=True))
    print(f"  keys on / keys off req/s: median of rounds {median:.2f}x; load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
