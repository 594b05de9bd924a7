"""Algorithm 2's kernels one at a time, one thread, on a preallocated 64 MiB buffer (issue 9).

Run as ``python -m bench.kernels``. Prints GB/s (output bytes) for Philox words alone and
for every elementwise kernel, best of ``--reps``, after a warm-up call; no anchor: these
are the per-core costs behind ``bench.engine``'s ratios, for finding what bounds a case.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from service.core.algorithms.v2 import kernels, philox_key, stream_key

N = 1 << 24
KEY = philox_key(stream_key(0, "bench.kernels"))


def _planes(planes: Any, count: int, k0: Any, k1: Any, n0: Any, n1: Any) -> None:
    kernels.philox_planes(planes, np.int64(0), count, k0, k1, n0, n1)


def _interleaved(words: Any, count: int, k0: Any, k1: Any, n0: Any, n1: Any) -> None:
    kernels.philox_words(words, np.int64(0), count, k0, k1, n0, n1)


# The generator alone, into preallocated memory (philox_block allocates a fresh array).
philox_planes: Any = numba.njit(nogil=True, error_model="numpy")(_planes)
philox_interleaved: Any = numba.njit(nogil=True, error_model="numpy")(_interleaved)


def best(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    f32 = np.zeros(N, np.float32)
    f64 = np.zeros(N, np.float64)
    bf16 = np.zeros(N, np.uint16)
    trunc = (0.02275013194817921, 0.9544997361036416, 1.0, 0.0, 0.05, -0.1, 0.1)  # keras-style ±2σ
    words = np.zeros(N, np.uint32)
    planes = words.reshape(4, N // 4)
    key = tuple(np.uint64(k) for k in KEY)
    cases: list[tuple[str, Any, Callable[[], object]]] = [
        ("philox words, interleaved", words, lambda: philox_interleaved(words, N // 4, *key)),
        ("philox words, four planes", words, lambda: philox_planes(planes, N // 4, *key)),
        ("uniform float32", f32, lambda: kernels.uniform_f32(f32, 0, *KEY, -1.0, 2.0)),
        ("normal float32", f32, lambda: kernels.normal_f32(f32, 0, *KEY, 0.0, 1.0)),
        ("truncated normal float32 (±2σ)", f32, lambda: kernels.truncnorm_f32(f32, 0, *KEY, *trunc)),
        ("float32 → bfloat16 rounding", bf16, lambda: kernels.round_bf16(f32, bf16)),
        ("uniform float64", f64, lambda: kernels.uniform_f64(f64, 0, *KEY, -1.0, 2.0)),
        ("normal float64", f64, lambda: kernels.normal_f64(f64, 0, *KEY, 0.0, 1.0)),
        ("truncated normal float64 (±2σ)", f64, lambda: kernels.truncnorm_f64(f64, 0, *KEY, *trunc)),
    ]
    print(f"bench.kernels · one thread · {N} elements · best of {args.reps}")
    for label, out, fn in cases:
        seconds = best(fn, args.reps)
        print(f"  {label:<34} {out.nbytes / seconds / 1e9:6.2f} GB/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
