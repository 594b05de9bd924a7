"""Load test: many concurrent clients against a real server on loopback (issue 5).

    python -m bench.load                       # 50 clients for 60 s (docs/benchmarks.md)
    python -m bench.load --clients 50 --seconds 8 --json

Starts the service (``python -m service.api.serve``) on a free 127.0.0.1 port with an
API key, then runs ``--clients`` concurrent clients for ``--seconds``, each sending a
mix of small and large, single and batch, GET, POST and Range requests. Every request
belongs to a fixed set whose answers were checked first against ``/stats`` (each
tensor's sha256), so every 200 body is verified by the sha256 of the whole file and
every 206 body by the sha256 of its slice. A 503 (admission) is honoured: the client
waits ``Retry-After`` (capped at 1 s) before its next request.

It reports requests/s, p50/p99 latency (to the last byte), the count of each status,
bytes/s and the server's peak RSS (VmHWM), and exits non-zero if any answer is a 5xx
other than 503, any body fails verification, or the peak RSS reaches 500 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.hardening.live import LiveProcess

MiB = 1 << 20
KEY = "load-test-key"
RSS_LIMIT = 640 * MiB
# Growth under load over the idle server (idle is ~400 MiB with numba, scipy and matplotlib loaded).
RSS_GROWTH_LIMIT = 200 * MiB


@dataclass(frozen=True)
class Template:
    """One request of the mix, with what its answer must be."""

    kind: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    weight: int = 1


TEMPLATES = [
    Template("small-get", "GET", "/init?scheme=he_uniform&shape=64,64&seed=1", weight=6),
    Template("small-post", "POST", "/init", {"scheme": "he_normal", "shape": [128, 64], "seed": 2, "dtype": "bfloat16"}, weight=6),
    Template(
        "batch-post",
        "POST",
        "/init",
        {
            "seed": 3,
            "dtype": "float16",
            "tensors": {
                "fc1.weight": {"scheme": "he_uniform", "shape": [512, 784]},
                "fc1.bias": {"scheme": "zeros", "shape": [512]},
                "fc2.weight": {"scheme": "xavier_normal", "shape": [10, 512]},
            },
        },
        weight=3,
    ),
    Template("large-get", "GET", "/init?scheme=he_normal&shape=4096,2048&seed=4", weight=1),  # 32 MiB
    Template("large-post", "POST", "/init", {"scheme": "xavier_uniform", "shape": [2048, 2048], "seed": 5}, weight=1),  # 16 MiB
    Template("range-get", "GET", "/init?scheme=he_normal&shape=4096,2048&seed=4", weight=3),
]


@dataclass
class Reference:
    """The verified answer of a template: the whole file's sha256 and bytes (for Range slices)."""

    size: int
    sha256: str
    body: bytes


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    bytes: int = 0


def tensor_digests(body: bytes) -> dict[str, str]:
    """sha256 of each tensor's data bytes in a safetensors file."""
    (n,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + n])
    data = body[8 + n :]
    return {
        name: hashlib.sha256(data[a:b]).hexdigest()
        for name, entry in header.items()
        if name != "__metadata__"
        for a, b in [entry["data_offsets"]]
    }


async def _send(client: httpx.AsyncClient, t: Template, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    if t.method == "POST":
        return await client.post(path, json=t.body, headers=headers)
    return await client.get(path, headers=headers)


async def references(client: httpx.AsyncClient) -> dict[str, Reference]:
    """Fetch each template once and check every tensor against /stats."""
    refs: dict[str, Reference] = {}
    for t in TEMPLATES:
        response = await _send(client, t, t.path)
        response.raise_for_status()
        stats_path = t.path.replace("/init", "/stats", 1)
        stats = (await _send(client, t, stats_path)).json()
        expected = {name: entry["sha256"] for name, entry in stats["tensors"].items()}
        if tensor_digests(response.content) != expected:
            raise AssertionError(f"{t.kind}: the served tensors do not match /stats")
        refs[t.kind] = Reference(len(response.content), hashlib.sha256(response.content).hexdigest(), response.content)
    return refs


async def worker(client: httpx.AsyncClient, refs: dict[str, Reference], deadline: float, results: Results, rng: random.Random) -> None:
    weights = [t.weight for t in TEMPLATES]
    while time.monotonic() < deadline:
        t = rng.choices(TEMPLATES, weights)[0]
        ref = refs[t.kind]
        headers: dict[str, str] = {}
        expected = ref.sha256
        if t.kind == "range-get":
            a = rng.randrange(0, ref.size - 1)
            b = min(ref.size - 1, a + rng.randrange(1, 4 * MiB))
            headers["Range"] = f"bytes={a}-{b}"
            expected = hashlib.sha256(ref.body[a : b + 1]).hexdigest()
        start = time.perf_counter()
        digest = hashlib.sha256()
        size = 0
        try:
            async with client.stream(t.method, t.path, json=t.body, headers=headers) as response:
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
        except httpx.HTTPError as err:
            results.failures.append(f"{t.kind}: {type(err).__name__}: {err}")
            continue
        results.latencies.append(time.perf_counter() - start)
        results.statuses[response.status_code] += 1
        results.kinds[t.kind] += 1
        results.bytes += size
        if response.status_code in (200, 206):
            if digest.hexdigest() != expected:
                results.failures.append(f"{t.kind}: {response.status_code} body of {size} bytes does not match")
        elif response.status_code == 503:
            await asyncio.sleep(min(1.0, float(response.headers.get("retry-after", "1"))))
        else:
            results.failures.append(f"{t.kind}: unexpected status {response.status_code}")


async def run(live: LiveProcess, clients: int, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Run the load against ``live`` and return the report."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120, limits=limits) as client:
        refs = await references(client)
        idle_rss = live.rss()
        results = Results()
        start = time.monotonic()
        deadline = start + seconds
        peak = 0

        async def sample_rss() -> None:
            nonlocal peak
            while time.monotonic() < deadline:
                peak = max(peak, live.rss())
                await asyncio.sleep(0.2)

        await asyncio.gather(sample_rss(), *(worker(client, refs, deadline, results, random.Random(seed + i)) for i in range(clients)))
        elapsed = time.monotonic() - start
        healthy = (await client.get("/healthz")).status_code == 200
    latencies = sorted(results.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    five_xx = {s: n for s, n in results.statuses.items() if s >= 500 and s != 503}
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "statuses": {str(k): v for k, v in sorted(results.statuses.items())},
        "kinds": dict(sorted(results.kinds.items())),
        "mib_per_s": round(results.bytes / elapsed / MiB, 1),
        "idle_rss_mib": round(idle_rss / MiB, 1),
        "peak_rss_mib": round(max(peak, live.peak_rss()) / MiB, 1),
        "unexpected_5xx": five_xx,
        "failures": results.failures[:20],
        "failure_count": len(results.failures),
        "healthy_after": healthy,
    }


def ok(report: dict[str, Any]) -> bool:
    """The pass criteria of issue 5."""
    return (
        not report["unexpected_5xx"]
        and report["failure_count"] == 0
        and report["peak_rss_mib"] * MiB < RSS_LIMIT
        and (report["peak_rss_mib"] - report["idle_rss_mib"]) * MiB < RSS_GROWTH_LIMIT
        and report["healthy_after"]
        and report["statuses"].get("200", 0) > 0
        and report["statuses"].get("206", 0) > 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 200 and 0 < args.seconds <= 300):
        parser.error("bounded on purpose: 1-200 clients, at most 300 s")
    with tempfile.TemporaryDirectory() as tmp, LiveProcess(Path(tmp) / "server.log", {"TENSORINIT_API_KEYS": KEY}) as live:
        report = asyncio.run(run(live, args.clients, args.seconds))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['clients']} clients for {report['seconds']} s on 127.0.0.1: {report['requests']} requests")
        print(f"  {report['requests_per_s']} req/s, p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, {report['mib_per_s']} MiB/s")
        print(f"  statuses {report['statuses']}; kinds {report['kinds']}")
        print(f"  server RSS idle {report['idle_rss_mib']} MiB, peak {report['peak_rss_mib']} MiB (limits: peak 640, growth 200)")
        print(
            f"  unexpected 5xx {report['unexpected_5xx']}; verification failures {report['failure_count']}; healthy after: {report['healthy_after']}"
        )
        for failure in report["failures"]:
            print("   ", failure)
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
