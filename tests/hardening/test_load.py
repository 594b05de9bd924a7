"""A bounded load test in CI: 50 clients for 8 s on loopback (``python -m bench.load`` runs 60 s)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench.load import KEY, ok, run

from .live import LiveProcess


def test_fifty_clients_mixed_load(tmp_path: Path) -> None:
    with LiveProcess(tmp_path / "server.log", {"TENSORINIT_API_KEYS": KEY}) as live:
        report = asyncio.run(run(live, clients=50, seconds=8))
    summary = json.dumps(report, indent=1)
    assert not report["unexpected_5xx"], summary
    assert report["failure_count"] == 0, summary
    # Memory does not grow with load: a bounded rise over the idle server (which holds numba's
    # kernels, scipy and matplotlib, ~400 MiB), and an absolute ceiling.
    assert report["peak_rss_mib"] - report["idle_rss_mib"] < 200, summary
    assert report["peak_rss_mib"] < 640, summary
    assert report["healthy_after"], summary
    assert set(report["kinds"]) == {"small-get", "small-post", "batch-post", "large-get", "large-post", "range-get"}, summary
    assert ok(report), summary
