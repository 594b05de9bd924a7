"""The costliest requests the default limits allow, per endpoint: time and peak memory, each in a fresh process (issue 17).

Run as ``python -m bench.costliest`` (every case) or ``python -m bench.costliest NAME...``.
Each case runs in its own Python process: the app with default settings, in process
(``httpx.ASGITransport``: the route, its checks and its pools, without a socket), warmed by a
small request to the same endpoint; then the request is timed, and the process's peak RSS
(``VmHWM``) is read against its RSS before it. For /propagation the engine's bounds
(``measure_bytes``, ``measure_flops``) are printed beside what was measured, and for /stats
its ``stats_flops``, so that the limits' model is checked against the real thing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from typing import Any

import httpx

# name: (method, path, body, Accept): each at (or just under) a default limit
CASES: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    # /propagation, measured: the matmuls (max_propagation_flops), width × batch at its limit
    "prop-matmul": (
        "POST",
        "/propagation",
        {"depth": 22, "width": 1024, "batch": 1024, "activation": "relu", "init": "he_normal"},
        "application/json",
    ),
    # the elementwise work: max_propagation_cells with a narrow, deep, smooth network
    "prop-cells-tanh": (
        "POST",
        "/propagation",
        {"depth": 62, "width": 64, "batch": 16384, "activation": "tanh", "init": "he_normal"},
        "application/json",
    ),
    "prop-cells-gelu-norm": (
        "POST",
        "/propagation",
        {
            "depth": 22,
            "width": 64,
            "batch": 16384,
            "activation": "gelu",
            "init": "he_normal",
            "residual": {"multiplier": 0.5, "norm": "layer"},
        },
        "application/json",
    ),
    # the weights' memory: one wide layer pair at max_propagation_bytes
    "prop-wide": (
        "POST",
        "/propagation",
        {"depth": 2, "width": 11206, "batch": 1, "activation": "relu", "init": "he_normal"},
        "application/json",
    ),
    # the weights' making: a deep stack of wide layers at batch 1 (max_propagation_flops)
    "prop-deep-weights": (
        "POST",
        "/propagation",
        {"depth": 338, "width": 1500, "batch": 1, "activation": "relu", "init": "he_normal"},
        "application/json",
    ),
    # orthogonal constructions (max_propagation_flops)
    "prop-orthogonal": (
        "POST",
        "/propagation",
        {"depth": 1, "width": 3338, "batch": 1, "activation": "relu", "init": "orthogonal"},
        "application/json",
    ),
    "prop-orthogonal-deep": (
        "POST",
        "/propagation",
        {"depth": 17, "width": 1024, "batch": 1, "activation": "tanh", "init": "orthogonal"},
        "application/json",
    ),
    # convolutions: patches (memory) and matmuls
    "prop-conv": (
        "POST",
        "/propagation",
        {
            "layers": [{"width": 64, "kernel": [3, 3]}] * 10,
            "input_width": 64,
            "spatial": [32, 32],
            "batch": 16,
            "activation": "relu",
            "init": "he_normal",
        },
        "application/json",
    ),
    # the theory alone: the deepest stacks, every compared network, a smooth activation (quadrature, gain search)
    "prop-theory": (
        "POST",
        "/propagation",
        {
            "depth": 1000,
            "width": 4096,
            "batch": 1,
            "activation": "gelu",
            "init": "he_normal",
            "measure": False,
            "compare": ["lecun_normal"] * 8,
        },
        "application/json",
    ),
    "prop-theory-png": (
        "POST",
        "/propagation",
        {
            "depth": 555,
            "width": 4096,
            "batch": 1,
            "activation": "gelu",
            "init": "he_normal",
            "measure": False,
            "compare": ["lecun_normal"] * 8,
        },
        "image/png",
    ),
    # /stats: the most elements its limit allows, and the largest orthogonal
    "stats-elements": ("GET", "/stats?scheme=he_normal&shape=10880,16384", None, "application/json"),
    "stats-orthogonal": ("GET", "/stats?scheme=orthogonal&shape=3150,3150", None, "application/json"),
    "stats-png": ("GET", "/stats?scheme=he_normal&shape=8192,16384&bins=1024", None, "image/png"),
    # /init: the largest orthogonal that max_matrix_flops allows (computed whole before its first byte), read to the end
    "init-orthogonal": ("GET", "/init?scheme=orthogonal&shape=4096,4096", None, "application/octet-stream"),
}

WARM = {
    "/propagation": {"depth": 2, "width": 8, "batch": 2, "activation": "gelu", "init": "orthogonal"},
    "/stats": None,
}


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


async def _one(name: str) -> dict[str, Any]:
    from service.api.app import create_app
    from service.api.routes.propagation import networks_of
    from service.api.settings import Settings
    from service.core.algorithms import warm_up

    method, path, body, accept = CASES[name]
    settings = Settings(access_log="off")
    app = create_app(settings)
    warm_up()
    estimate: dict[str, Any] = {}
    if path == "/propagation":
        networks, _, measured = networks_of(body, settings, accept)
        if measured:
            from service.core.propagation.networks import MEASURE_OVERHEAD

            nbytes = sum(n.measure_bytes() for n in networks) + MEASURE_OVERHEAD
            estimate = {"bytes": nbytes, "flops": sum(n.measure_flops() for n in networks)}
    else:
        from service.core import resolve
        from service.core.costs import matrix_flops, stats_flops

        query = dict(p.split("=") for p in path.split("?")[1].split("&"))
        spec = resolve(query["scheme"], tuple(int(d) for d in query["shape"].split(",")))
        estimate = {"flops": (stats_flops if path.startswith("/stats") else matrix_flops)(spec)}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
        warm_path = path if path == "/propagation" else path.split("?")[0] + "?scheme=orthogonal&shape=8,8"
        await client.request(method, warm_path, json=WARM.get(path), headers={"Accept": accept})
        gc.collect()
        before = _status("VmRSS")
        t = time.perf_counter()
        r = await client.request(method, path, json=body, headers={"Accept": accept})
        seconds = time.perf_counter() - t
        peak = _status("VmHWM")
    row = {"name": name, "status": r.status_code, "seconds": round(seconds, 2), "growth_mib": (peak - before) >> 20}
    row |= {f"estimate_{k}": v for k, v in estimate.items()}
    if r.status_code >= 400:
        row["problem"] = r.json().get("detail")
    return row


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(asyncio.run(_one(sys.argv[2]))))
        return
    names = sys.argv[1:] or list(CASES)
    print(f"{'case':24s} {'status':>6s} {'seconds':>8s} {'peak RSS growth':>16s} {'bound (bytes)':>14s} {'operations':>10s}")
    for name in names:
        out = subprocess.run([sys.executable, "-m", "bench.costliest", "--one", name], capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"{name:24s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        bound = f"{row['estimate_bytes'] >> 20} MiB" if "estimate_bytes" in row else "-"
        ops = f"{row['estimate_flops']:.3g}" if "estimate_flops" in row else "-"
        print(f"{name:24s} {row['status']:6d} {row['seconds']:8.2f} {row['growth_mib']:12d} MiB {bound:>14s} {ops:>10s}", flush=True)
        if "problem" in row:
            print(f"    {row['problem']}")


if __name__ == "__main__":
    main()
