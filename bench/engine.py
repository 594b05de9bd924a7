"""Engine throughput side by side with torch 2.13 CPU, in one process and one run.

Run as ``python -m bench.engine`` (``make bench``). Every case interleaves ours and the
anchor repetition by repetition, after a warm-up, so that both see the same machine
state; the table prints throughputs and ratios, PASS/MISS judged on the best-of-N
ratio (the median ratio is printed beside it). Targets come from issue 9.

Elementwise cases fill one preallocated buffer each repetition on both sides (ours:
``Tensor(spec).array(out=buf)``, torch: the in-place init of a preallocated tensor, as
modules use it); orthogonal makes a fresh tensor on both sides. Both use two threads.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import scipy
import torch

from service.core import ResolvedSpec, Tensor, resolve

THREADS = 2
TOTAL_BYTES = 256 << 20
SHAPE = (8192, 8192)  # 2^26 float32 elements = 256 MiB
ORTHO_SHAPE = (4096, 4096)
ELEMENTS = SHAPE[0] * SHAPE[1]


@dataclass(frozen=True)
class Case:
    """One comparison: ``ours`` against ``anchor``, each a callable producing one tensor."""

    label: str
    anchor_label: str
    ours: Callable[[int], object]
    anchor: Callable[[int], object]
    ours_elements: int
    anchor_elements: int
    target: float
    by_time: bool = False  # True: ratio = ours time / anchor time, must be <= target
    reps: int = 5
    warmup: int = 1
    counted: bool = True


@dataclass(frozen=True)
class Result:
    case: Case
    ours: list[float]
    anchor: list[float]

    def ratio(self, pick: Callable[[list[float]], float]) -> float:
        o, a = pick(self.ours), pick(self.anchor)
        if self.case.by_time:
            return o / a
        return (self.case.ours_elements / o) / (self.case.anchor_elements / a)

    @property
    def passed(self) -> bool:
        r = self.ratio(min)
        return r <= self.case.target if self.case.by_time else r >= self.case.target


def _timed(fn: Callable[[int], object], rep: int) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn(rep)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def run_case(case: Case) -> Result:
    """Warm up, then alternate which side goes first in every repetition."""
    ours: list[float] = []
    anchor: list[float] = []
    for rep in range(case.warmup + case.reps):
        pair = [(case.ours, ours), (case.anchor, anchor)]
        if rep % 2:
            pair.reverse()
        for fn, sink in pair:
            elapsed = _timed(fn, rep)
            if rep >= case.warmup:
                sink.append(elapsed)
    return Result(case, ours, anchor)


def _ours(spec_for: Callable[[int], ResolvedSpec]) -> Callable[[int], object]:
    def run(rep: int) -> object:
        return Tensor(spec_for(rep)).array()

    return run


def _ours_inplace(spec_for: Callable[[int], ResolvedSpec]) -> Callable[[int], object]:
    """Fill one preallocated buffer, as the torch anchor does (no first-touch page faults on either side)."""
    first = spec_for(0)
    out = np.empty(first.numel, first.np_dtype)

    def run(rep: int) -> object:
        Tensor(spec_for(rep)).array(out=out)
        return None

    return run


def _spec(scheme: str, convention: str = "torch", dtype: str = "float32", shape: tuple[int, ...] = SHAPE) -> Callable[[int], ResolvedSpec]:
    spec = resolve(scheme, shape, convention=convention, dtype=dtype)
    return lambda rep: spec


def _fresh_seed_spec(scheme: str, shape: tuple[int, ...]) -> Callable[[int], ResolvedSpec]:
    # A new seed every repetition: materialized tensors are cached by spec digest, and a
    # cache hit would time a memcpy instead of the QR.
    return lambda rep: resolve(scheme, shape, seed=rep)


def _torch(init: Callable[[torch.Tensor], object], shape: tuple[int, ...] = SHAPE) -> Callable[[int], object]:
    def run(rep: int) -> object:
        w = torch.empty(shape)
        init(w)
        return w

    return run


def _torch_inplace(init: Callable[[torch.Tensor], object]) -> Callable[[int], object]:
    w = torch.empty(SHAPE)

    def run(rep: int) -> object:
        init(w)
        return None

    return run


def _torch_inplace_trunc(mean: float, std: float, low: float, high: float) -> Callable[[int], object]:
    return _torch_inplace(lambda w: torch.nn.init.trunc_normal_(w, mean=mean, std=std, a=low, b=high))


def cases() -> list[Case]:
    """Issue 9's targets: ours fills a preallocated buffer, torch initializes a preallocated tensor in place."""
    keras = resolve("he_normal", SHAPE, convention="keras")
    dist: Any = keras.distribution
    return [
        Case(
            "he_normal torch f32",
            "kaiming_normal_ in place",
            _ours_inplace(_spec("he_normal")),
            _torch_inplace(torch.nn.init.kaiming_normal_),
            ELEMENTS,
            ELEMENTS,
            4.0,
        ),
        Case(
            "he_uniform torch f32",
            "kaiming_uniform_ in place",
            _ours_inplace(_spec("he_uniform")),
            _torch_inplace(torch.nn.init.kaiming_uniform_),
            ELEMENTS,
            ELEMENTS,
            6.0,
        ),
        Case(
            "he_normal keras f32 (trunc)",
            "trunc_normal_ in place",
            _ours_inplace(_spec("he_normal", "keras")),
            _torch_inplace_trunc(dist.mean, dist.std, dist.low, dist.high),
            ELEMENTS,
            ELEMENTS,
            30.0,
            reps=3,
        ),
        Case(
            "he_normal torch bf16",
            "ours he_normal f32",
            _ours_inplace(_spec("he_normal", dtype="bfloat16")),
            _ours_inplace(_spec("he_normal")),
            ELEMENTS,
            ELEMENTS,
            0.9,
        ),
        Case(
            "he_normal torch f64",
            "ours he_normal f32",
            _ours_inplace(_spec("he_normal", dtype="float64")),
            _ours_inplace(_spec("he_normal")),
            ELEMENTS,
            ELEMENTS,
            0.0,
            counted=False,
        ),
        Case(
            "orthogonal 4096² f32",
            "orthogonal_",
            _ours(_fresh_seed_spec("orthogonal", ORTHO_SHAPE)),
            _torch(torch.nn.init.orthogonal_, ORTHO_SHAPE),
            ORTHO_SHAPE[0] * ORTHO_SHAPE[1],
            ORTHO_SHAPE[0] * ORTHO_SHAPE[1],
            2.5,
            by_time=True,
            reps=3,
        ),
    ]


def blas_description() -> str:
    """The BLAS libraries loaded in this process, from threadpoolctl when it is installed."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl to show the BLAS kernels)"
    parts = []
    for lib in threadpoolctl.threadpool_info():
        name = os.path.basename(lib["filepath"])
        extra = f" {lib['architecture']}" if lib.get("architecture") else ""
        parts.append(f"{lib['internal_api']} {lib.get('version') or ''}{extra} ({name}, {lib['num_threads']} threads)")
    return "; ".join(parts)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def warm_memory(nbytes: int = 2 << 30) -> None:
    # On a fresh VM the first touch of guest memory is ~10x slower than later touches;
    # touch it once so that whichever side runs first does not pay for it.
    np.ones(nbytes // 8).sum()


def idle_cores(seconds: float = 1.0) -> float:
    """Cores left idle by other processes over ``seconds``: below ~1.9 the run is contended."""

    def sample() -> list[int]:
        with open("/proc/stat", encoding="utf-8") as f:
            return [int(v) for v in f.readline().split()[1:]]

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except OSError:
        return float("nan")
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return (delta[3] + delta[4]) / (sum(delta) or 1) * (os.cpu_count() or 1)


def _rate(elements: int, seconds: float) -> str:
    return f"{elements * 4 / seconds / 1e6:7.0f} MB/s"


def format_table(results: list[Result]) -> str:
    head = f"| {'ours':<28} | {'anchor':<26} | {'ours':>12} | {'anchor':>12} | {'ratio best':>10} | {'ratio med':>9} | {'target':>7} | result |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for res in results:
        c = res.case
        if c.by_time:
            ours, anchor = f"{min(res.ours):9.2f} s", f"{min(res.anchor):9.2f} s"
            target = f"≤ {c.target:.1f}×"
        else:
            ours, anchor = _rate(c.ours_elements, min(res.ours)), _rate(c.anchor_elements, min(res.anchor))
            target = f"≥ {c.target:.1f}×"
        verdict = ("PASS" if res.passed else "MISS") if c.counted else "info"
        lines.append(
            f"| {c.label:<28} | {c.anchor_label:<26} | {ours:>12} | {anchor:>12} | {res.ratio(min):9.2f}× |"
            f" {res.ratio(statistics.median):8.2f}× | {target:>7} | {verdict:<6} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Issue 9's engine targets, ours against torch in place, side by side.")
    parser.add_argument("--only", default="", help="run only the cases whose label contains this text (e.g. trunc)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    print(f"cpus: {os.cpu_count()}  cpu: {cpu_model()}")
    print(
        f"numpy {np.__version__}  scipy {scipy.__version__}  ml_dtypes {ml_dtypes.__version__}  torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    warm_memory()
    print(f"idle cores before the run: {idle_cores():.2f} of {os.cpu_count()}", flush=True)
    results = []
    for case in (c for c in cases() if args.only in c.label):
        results.append(run_case(case))
        print(f"  measured {case.label} vs {case.anchor_label}", flush=True)
    print(f"idle cores after the run: {idle_cores():.2f} of {os.cpu_count()}")
    print(f"blas: {blas_description()}")
    print(f"{TOTAL_BYTES >> 20} MiB of float32 per elementwise tensor; MB/s counts float32-equivalent bytes (4 per element);")
    print("ratio = ours/anchor throughput (orthogonal: ours/anchor time); best = best-of-N each side, med = median.")
    print(format_table(results))
    counted = [r for r in results if r.case.counted]
    print(f"{sum(r.passed for r in counted)}/{len(counted)} targets met")
    print(
        "kernels: numba " + importlib.import_module("numba").__version__ + ", NUMBA_CPU_NAME=" + os.environ.get("NUMBA_CPU_NAME", "(host)")
    )


if __name__ == "__main__":
    main()
