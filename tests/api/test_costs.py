"""Issue 17: requests whose memory or work grows past the cost limits are refused (413 naming the limit) before any work.

The attacker's inputs, asked of the real server: each answer must come at once (nothing
drawn), and a request just under the same limit must still be served (the limits refuse
what they should, not more). The costliest allowed requests are timed in docs/benchmarks.md
(``python -m bench.costliest``).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LiveServer

REFUSED: list[tuple[str, str, dict[str, Any] | None, str]] = [
    # width 23170, depth 2: +4.1 GiB; the widest layer the old limits allowed: 16-24 GiB
    ("POST", "/propagation", {"depth": 2, "width": 23170, "batch": 1, "init": "he_normal"}, "max_propagation_bytes"),
    ("POST", "/propagation", {"depth": 1, "width": 46340, "batch": 1, "init": "he_normal"}, "max_propagation_bytes"),
    # depth 1000, width 4096, batch 1, orthogonal: about an hour, and 9 with compare
    ("POST", "/propagation", {"depth": 1000, "width": 4096, "batch": 1, "init": "orthogonal"}, "max_propagation_flops"),
    ("POST", "/propagation", {"depth": 1000, "width": 2048, "batch": 1, "init": "orthogonal"}, "max_propagation_flops"),
    (
        "POST",
        "/propagation",
        {"depth": 1000, "width": 4096, "batch": 1, "init": "orthogonal", "compare": ["he_normal"] * 8},
        "max_propagation_bytes",
    ),
    # /stats: 2^29 elements took +2 GiB and a minute on two cores; an orthogonal 4096² is a QR and a Gram product of 2^36 each
    ("GET", "/stats?scheme=he_normal&shape=32768,16384", None, "max_stats_flops"),
    ("GET", "/stats?scheme=orthogonal&shape=4096,4096", None, "max_stats_flops"),
    ("POST", "/stats", {"tensors": {f"t{i}": {"scheme": "orthogonal", "shape": [1024, 1024]} for i in range(64)}}, "max_stats_flops"),
    # /init: each orthogonal is computed whole before its first byte (4096²: 16 s); a batch of them
    ("POST", "/init", {"tensors": {f"t{i}": {"scheme": "orthogonal", "shape": [4096, 4096]} for i in range(2)}}, "max_matrix_flops"),
    (
        "POST",
        "/init",
        {"tensors": {f"t{i}": {"scheme": "delta_orthogonal", "shape": [4096, 4096, 3, 3]} for i in range(2)}},
        "max_matrix_flops",
    ),
    ("POST", "/stats", {"tensors": {f"t{i}": {"scheme": "orthogonal", "shape": [4096, 4096]} for i in range(2)}}, "max_matrix_flops"),
]


@pytest.mark.parametrize(("method", "path", "body", "limit"), REFUSED)
def test_refused_before_any_work(live_server: LiveServer, method: str, path: str, body: Any, limit: str) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        t = time.perf_counter()
        r = client.request(method, path, json=body)
        elapsed = time.perf_counter() - t
    assert r.status_code == 413, r.text[:300]
    problem = r.json()
    assert problem["limit_name"] == limit
    assert limit in problem["detail"]
    assert elapsed < 3.0  # checked, not started


def test_theory_alone_is_not_refused_for_the_measurement_s_cost(live_server: LiveServer) -> None:
    body = {"depth": 1000, "width": 4096, "batch": 1, "init": "orthogonal", "measure": False}
    r = httpx.post(f"{live_server.url}/propagation", json=body, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["measured"] is False


# A slice of an elementwise tensor draws only its own elements, whatever the full shape (each
# element is drawn alone); a slice of an orthogonal one is computed whole first, so it costs the whole.
SLICED: list[tuple[dict[str, Any], int]] = [
    ({"scheme": "he_normal", "shape": [1 << 20, 1 << 20], "name": "w", "slice": "0:2"}, 200),
    ({"scheme": "zeros", "shape": [102, 276859, 112, 1034], "name": "w", "slice": "5:6,0:3"}, 200),
    ({"scheme": "orthogonal", "shape": [4096, 4096], "name": "w", "slice": "0:1"}, 413),
]


@pytest.mark.parametrize(("body", "status"), SLICED)
def test_the_stats_of_a_slice_cost_what_the_slice_draws(live_server: LiveServer, body: dict[str, Any], status: int) -> None:
    r = httpx.post(f"{live_server.url}/stats", json=body, timeout=60)
    assert r.status_code == status, r.text[:300]
    if status == 413:
        assert r.json()["limit_name"] == "max_stats_flops"
    else:
        (stats,) = r.json()["tensors"].values()
        served = [len(range(*axis)) for axis in stats["spec"]["slice"]]
        assert stats["empirical"]["count"] == int(np.prod(served)) < 1 << 22  # the slice's elements only
