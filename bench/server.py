"""The service side by side with its anchors, in one run, printed as ratios (issues 3 and 9).

Run as ``python -m bench.server`` (after ``make``'s venv exists). Everything targets
127.0.0.1 with bounded request counts. Cases:

* server throughput, curl writing to /dev/null as the client (little client CPU), for
  256 MiB float32: he_normal vs torch ``kaiming_normal_`` filling a preallocated tensor
  in place (issue 9's anchor) and vs our own zeros (the transport ceiling), he_uniform
  vs ``kaiming_uniform_`` in place and vs our zeros, zeros vs a bare Starlette app
  streaming pre-built bytes;
* end to end into a numpy array in this Python process (``tensorinit.Client.init``), sharing the two cores
  with the server: he_normal vs torch ``kaiming_normal_`` in place, into a fresh array
  (its pages faulted in) and with ``out=`` into a preallocated one (as torch's tensor is);
* small requests: requests/s, p50 and p99 of 64×64 he_uniform, a new seed per request,
  against a bare Starlette endpoint returning the same number of bytes (curl, parallel,
  keep-alive);
* server peak RSS while streaming a 4 GiB tensor, sampled from /proc, minus idle.

The servers run as subprocesses (``uvicorn ... --log-level warning``, no access log),
the same way for ours and the bare app. Each throughput figure is the best of REPS
rounds, ours and the anchor interleaved; the median of the per-round ratios is printed
beside the verdict.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
SIZE = 256 * MiB
SHAPE = "8192,8192"  # 2^26 float32 = 256 MiB
SMALL_QUERY = "scheme=he_uniform&shape=64,64"


# -- the bare Starlette anchor (its own process: `uvicorn bench.server:bare_app --factory`) --


def bare_app() -> Starlette:
    """Streams pre-built bytes in 1 MiB chunks (/blob?size=N) and returns N bytes at once (/small?size=N).

    /floor?seed=N is the floor of any Python handler for the small case: the same
    bytes as ``GET /init?scheme=he_uniform&shape=64,64&seed=N`` (checked in the run),
    made with nothing but the irreducible work of algorithm 2 (the stream key and the
    uniform kernel) and a header prepared at start.
    """
    blob = bytes(SIZE)
    floor = _floor()

    async def stream(request: Request) -> StreamingResponse:
        size = int(request.query_params.get("size", SIZE))

        async def chunks() -> AsyncIterator[memoryview]:
            view = memoryview(blob)
            for lo in range(0, size, MiB):
                yield view[lo : min(lo + MiB, size)]

        return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"Content-Length": str(size)})

    async def small(request: Request) -> Response:
        return Response(blob[: int(request.query_params.get("size", 16))], media_type="application/octet-stream")

    async def floor_endpoint(request: Request) -> Response:
        return Response(floor(int(request.query_params["seed"])), media_type="application/octet-stream")

    return Starlette(routes=[Route("/blob", stream), Route("/small", small), Route("/floor", floor_endpoint)])


def _floor() -> Callable[[int], bytes]:
    """seed → the safetensors file of 64×64 he_uniform, by the engine's primitives only."""
    from service.api.resolution import metadata_json
    from service.core import BLOCK_ELEMENTS, resolve
    from service.core.algorithms.v2 import kernels, philox_key, stream_key
    from service.core.spec import Uniform
    from service.core.streams import Tensor
    from service.safetensors_stream import Plan

    spec = resolve("he_uniform", (64, 64))
    assert isinstance(spec.distribution, Uniform)
    assert spec.numel <= BLOCK_ELEMENTS
    header = Plan([Tensor(spec)], {"tensorinit": metadata_json([spec])}).header_json.decode()
    before, _, after = header.partition('\\"seed\\":0,')
    low, width = spec.distribution.low, spec.distribution.high - spec.distribution.low

    def make(seed: int) -> bytes:
        text = f'{before}\\"seed\\":{seed},{after}'.encode()
        text += b" " * (-len(text) % 8)
        values = np.empty(spec.numel, np.float32)
        kernels.uniform_f32(values, 0, *philox_key(stream_key(seed, spec.name)), low, width)
        return b"".join((len(text).to_bytes(8, "little"), text, values.data))

    return make


# -- servers and clients ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(target: str, port: int | None = None) -> Iterator[tuple[str, int]]:
    """``uvicorn <target> --factory`` on ``port`` (default: a free loopback port): (base url, pid).

    Ours through ``python -m service.api.serve`` (what ``make run`` and the Dockerfile
    run), the bare anchor through plain uvicorn.
    """
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "service.api.serve" if target.startswith("service.") else "uvicorn",
        target,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + ("/healthz" if "service" in target else "/small"), timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not start")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def curl_seconds(url: str) -> float:
    """Wall time of one download to /dev/null, checked for completeness."""
    out = subprocess.run(
        ["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url], check=True, capture_output=True, text=True
    ).stdout
    size, seconds = out.split()
    assert int(size) >= SIZE, out
    return float(seconds)


def best(fn: Callable[[], float], reps: int) -> float:
    fn()  # warm-up
    return min(fn() for _ in range(reps))


def paired(ours: Callable[[], float], anchor: Callable[[], float], reps: int) -> tuple[float, float, float]:
    """Best seconds of each side and the median of the per-round ratios anchor/ours, rounds interleaved.

    Interleaving puts both sides under the same drift of a shared machine (the spread
    here is ±15 % within minutes); the median ratio is the steadier figure to read.
    """
    ours(), anchor()  # warm-up
    rounds = [(ours(), anchor()) for _ in range(reps)]
    return min(o for o, _ in rounds), min(a for _, a in rounds), statistics.median(a / o for o, a in rounds)


_PREALLOCATED: list[torch.Tensor] = []


def torch_seconds(init: Callable[[torch.Tensor], object]) -> float:
    """torch initializing one preallocated 8192×8192 float32 tensor in place, as a module's reset does."""
    if not _PREALLOCATED:
        _PREALLOCATED.append(torch.zeros(8192, 8192))
    x = _PREALLOCATED[0]
    t0 = time.perf_counter()
    init(x)
    return time.perf_counter() - t0


def client_numpy_seconds(url: str) -> float:
    """The client's ``init`` into a numpy array (what a training pipeline calls)."""
    from tensorinit import Client

    t0 = time.perf_counter()
    with Client(url, timeout=120) as client:
        arr = client.init("he_normal", (8192, 8192), name="weight")
    assert arr.size == SIZE // 4
    return time.perf_counter() - t0


_OUT: list[np.ndarray] = []


def client_out_seconds(url: str) -> float:
    """The client's ``init(out=...)`` into one preallocated array, as torch's anchor fills its preallocated tensor."""
    from tensorinit import Client

    if not _OUT:
        _OUT.append(np.zeros((8192, 8192), np.float32))
    t0 = time.perf_counter()
    with Client(url, timeout=120) as client:
        client.init("he_normal", (8192, 8192), name="weight", out=_OUT[0])
    return time.perf_counter() - t0


def small_load(url: str, count: int, parallel: int, first_seed: int = 0) -> tuple[float, list[float]]:
    """requests/s and the sorted latencies (seconds) of ``count`` GETs of ``url`` with curl in parallel, keep-alive.

    Each request has its own ``seed`` (``first_seed``, ``first_seed + 1``...), so that no
    cache of answers, in the service or between, can stand in for the work of making them.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".curlrc") as cfg:
        for i in range(first_seed, first_seed + count):
            cfg.write(f'url = "{url}&seed={i}"\noutput = "/dev/null"\n')
        cfg.flush()
        t0 = time.perf_counter()
        out = subprocess.run(
            ["curl", "-s", "-f", "-Z", "--parallel-max", str(parallel), "-K", cfg.name, "-w", "%{time_total}\\n"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        wall = time.perf_counter() - t0
    times = sorted(float(t) for t in out.split())
    assert len(times) == count
    return count / wall, times


def percentile(times: list[float], q: float) -> float:
    return sorted(times)[min(len(times) - 1, int(len(times) * q))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def peak_rss_while(pid: int, action: Callable[[], object]) -> int:
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak


# -- the run --------------------------------------------------------------------------------


CASES = ["throughput", "e2e", "small", "rss"]
Row = Callable[..., None]


def throughput(ours_url: str, bare_url: str, reps: int, row: Row) -> None:
    gbps = SIZE / 1e9
    print(f"server throughput, curl → /dev/null, 256 MiB float32 (best of {reps}, rounds interleaved):")
    zeros_url = f"{ours_url}/init?scheme=zeros&shape={SHAPE}"
    for scheme, init, target, zeros_target in (
        ("he_normal", torch.nn.init.kaiming_normal_, 2.0, None),
        ("he_uniform", torch.nn.init.kaiming_uniform_, 1.0, 0.7),
    ):
        url = f"{ours_url}/init?scheme={scheme}&shape={SHAPE}"
        ours, anchor, median = paired(
            lambda u=url: curl_seconds(u),  # type: ignore[misc]
            lambda i=init: torch_seconds(i),  # type: ignore[misc]
            reps,
        )
        row(f"GET /init {scheme}", f"torch {init.__name__} in place", gbps / ours, gbps / anchor, target, median=median)
        ours, zeros, median = paired(lambda u=url: curl_seconds(u), lambda: curl_seconds(zeros_url), reps)  # type: ignore[misc]
        row(f"GET /init {scheme} ", "our GET /init zeros", gbps / ours, gbps / zeros, zeros_target or 0.0, median=median)
    zeros, bare, median = paired(lambda: curl_seconds(zeros_url), lambda: curl_seconds(f"{bare_url}/blob?size={SIZE}"), reps)
    row("GET /init zeros", "bare Starlette, pre-built bytes", gbps / zeros, gbps / bare, 0.8, median=median)


def end_to_end(ours_url: str, reps: int, row: Row) -> None:
    gbps = SIZE / 1e9
    print(f"end to end into numpy (tensorinit.Client.init in this process), 256 MiB float32 (best of {reps}, rounds interleaved):")
    e2e, anchor, median = paired(
        lambda: client_numpy_seconds(ours_url),
        lambda: torch_seconds(torch.nn.init.kaiming_normal_),
        reps,
    )
    row("client init → numpy he_normal", "torch kaiming_normal_ in place", gbps / e2e, gbps / anchor, 1.0, median=median)
    e2e, anchor, median = paired(
        lambda: client_out_seconds(ours_url),
        lambda: torch_seconds(torch.nn.init.kaiming_normal_),
        reps,
    )
    row("client init(out=) → preallocated he_normal", "torch kaiming_normal_ in place", gbps / e2e, gbps / anchor, 1.0, median=median)


def small(ours_url: str, bare_url: str, count: int, parallel: int, row: Row, rounds: int = 4) -> None:
    size = len(httpx.get(f"{ours_url}/init?{SMALL_QUERY}").content)
    print(f"small requests: {count} GETs each, curl --parallel-max {parallel}, {size}-byte bodies, {rounds} interleaved rounds:")
    for seed in (0, 1, 2**64 - 1):  # the floor makes our very bytes
        assert httpx.get(f"{bare_url}/floor?seed={seed}").content == httpx.get(f"{ours_url}/init?{SMALL_QUERY}&seed={seed}").content
    urls = {"ours": f"{ours_url}/init?{SMALL_QUERY}", "bare": f"{bare_url}/small?size={size}", "floor": f"{bare_url}/floor?x=0"}
    for url in urls.values():
        small_load(url, 200, parallel)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in urls}
    times: dict[str, list[float]] = {name: [] for name in urls}
    per_round = count // rounds
    for r in range(rounds):
        for name, url in urls.items():
            rate, latencies = small_load(url, per_round, parallel, first_seed=1000 + r * per_round)
            rates[name].append(rate)
            times[name] += latencies
    # req/s over all rounds (the harmonic mean of equal-sized rounds); ratios per round, medians.
    total = {name: len(rates[name]) / sum(1 / x for x in rates[name]) for name in urls}
    median = statistics.median(o / b for o, b in zip(rates["ours"], rates["bare"], strict=True))
    row("GET /init 64×64 he_uniform", "bare Starlette, same bytes", total["ours"], total["bare"], 0.6, "req/s", median=median)
    p50, p99 = {n: percentile(t, 0.5) * 1e3 for n, t in times.items()}, {n: percentile(t, 0.99) * 1e3 for n, t in times.items()}
    print(f"    latency p50 {p50['ours']:.2f} ms vs {p50['bare']:.2f} ms; p99 {p99['ours']:.2f} ms vs {p99['bare']:.2f} ms")
    floor_median = statistics.median(f / b for f, b in zip(rates["floor"], rates["bare"], strict=True))
    print(
        f"    floor, bare Starlette making the same bytes with the engine's primitives only: {total['floor']:.0f} req/s"
        f" = {total['floor'] / total['bare']:.2f}× bare (median of rounds {floor_median:.2f}×; p50 {p50['floor']:.2f} ms,"
        f" p99 {p99['floor']:.2f} ms); ours = {total['ours'] / total['floor']:.2f}× the floor"
    )


def rss(ours_url: str, ours_pid: int) -> float:
    print("server peak RSS while streaming a 4 GiB he_normal tensor (curl → /dev/null):")
    idle = rss_kib(ours_pid)
    peak = peak_rss_while(
        ours_pid,
        lambda: subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", f"{ours_url}/init?scheme=he_normal&shape=32768,32768"], check=True),
    )
    grew = (peak - idle) / 1024
    print(f"  idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, +{grew:.1f} MiB → {'PASS' if grew < 150 else 'MISS'} (< 150 MiB)")
    return grew


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--small-requests", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--only", nargs="+", choices=CASES, default=CASES, help="run only these groups of cases")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    rows: list[tuple[str, str, float]] = []

    def row(label: str, anchor: str, ours: float, theirs: float, target: float, unit: str = "GB/s", median: float | None = None) -> None:
        ratio = ours / theirs
        rows.append((label, anchor, ratio))
        verdicts[label] = ("PASS" if ratio >= target else "MISS") + f" (≥ {target}×)"
        if median is not None:
            verdicts[label] += f"; median of rounds {median:.2f}×"
        print(f"  {label:<44} {ours:9.3f} {unit:<6} vs {anchor:<36} {theirs:9.3f} {unit:<6} → {ratio:5.2f}×", flush=True)

    verdicts: dict[str, str] = {}
    grew: float | None = None
    print(f"bench.server · {os.cpu_count()} cores · python {sys.version.split()[0]} · torch {torch.__version__} · numpy {np.__version__}")
    with server("service.api.app:create_app") as (ours_url, ours_pid), server("bench.server:bare_app") as (bare_url, _):
        if "throughput" in args.only:
            throughput(ours_url, bare_url, args.reps, row)
        if "e2e" in args.only:
            end_to_end(ours_url, args.reps, row)
        if "small" in args.only:
            small(ours_url, bare_url, args.small_requests, args.parallel, row)
        if "rss" in args.only:
            grew = rss(ours_url, ours_pid)

    print("\nsummary (ratio = ours / anchor):")
    for label, anchor_name, ratio in rows:
        print(f"  {label:<30} vs {anchor_name:<36} {ratio:5.2f}×  {verdicts[label]}")
    if grew is not None:
        print(f"  {'peak RSS above idle':<30}    {'':<36} {grew:5.1f} MiB {'PASS' if grew < 150 else 'MISS'} (< 150 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
