"""orthogonal_q: the bytes of docs/algorithm.md §10 (docs/_householder_section.md), on any thread count and CPU.

The reference below the banner is written from the document alone, in plain numpy with
elementwise operations only (every sum an explicit loop over its index, every term
added, zeros included), and must reproduce the kernel's bytes exactly. Orthogonality
and agreement with LAPACK's ``dorgqr`` on the same reflectors check that the document
describes the right matrix; the thread and CPU rows check that nothing but the input
decides the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import scipy.linalg.lapack

from service.core.algorithms.v2 import householder
from service.core.algorithms.v2.householder import orthogonal_q

F64 = npt.NDArray[np.float64]
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------
# The reference, from docs/_householder_section.md only.
# ------------------------------------------------------------------------------------

NB = 64


def reference_reflectors(a: F64) -> tuple[F64, F64, F64]:
    """Step 1: (tau, w, d)."""
    m, n = a.shape
    s = np.zeros(n)
    for i in range(1, m):  # s_k over rows k+1 … m−1, ascending, all columns at once
        k = min(i, n)
        s[:k] = s[:k] + a[i, :k] * a[i, :k]
    tau, w, d = np.zeros(n), np.zeros(n), np.ones(n)
    for k in range(n):
        alpha = a[k, k]
        xi = np.sqrt(s[k])
        if xi == 0.0:
            beta = alpha
        else:
            nrm = np.sqrt(alpha * alpha + xi * xi)
            beta = nrm if alpha < 0.0 else -nrm
            tau[k] = (beta - alpha) / beta
            w[k] = 1.0 / (alpha - beta)
        d[k] = -1.0 if beta < 0.0 else 1.0
    return tau, w, d


def reference_v(a: F64, tau: F64, w: F64, j: int, b: int) -> F64:
    """Step 2: the block's V."""
    r = a.shape[0] - j
    v = np.zeros((r, b))
    for p in range(b):
        v[p, p] = 1.0
        if tau[j + p] != 0.0:
            v[p + 1 :, p] = a[j + p + 1 :, j + p] * w[j + p]
    return v


def reference_t(v: F64, tau: F64, j: int) -> F64:
    """Step 2: G = VᵀV summed over every row, then T column by column."""
    r, b = v.shape
    g = np.zeros((b, b))
    for i in range(r):
        g = g + v[i, :, None] * v[i, None, :]
    t = np.zeros((b, b))
    for q in range(b):
        t[q, q] = tau[j + q]
        z = (-tau[j + q]) * g[:q, q]
        acc = np.zeros(q)
        for s in range(q):
            acc = acc + t[:q, s] * z[s]
        t[:q, q] = acc
    return t


def reference(a: F64) -> tuple[F64, F64]:
    """(Q, d) of §10, every sum over its whole range."""
    m, n = a.shape
    tau, w, d = reference_reflectors(a)
    q = np.eye(m, n)
    for j in reversed(range(0, n, NB)):
        b = min(NB, n - j)
        v = reference_v(a, tau, w, j, b)
        t = reference_t(v, tau, j)
        c = q[j:, j:].copy()
        wv = np.zeros((b, n - j))
        for i in range(m - j):
            wv = wv + v[i, :, None] * c[i, None, :]
        wt = np.zeros((b, n - j))
        for s in range(b):
            wt = wt + t[:, s, None] * wv[s, None, :]
        for p in range(b):
            c = c - v[:, p, None] * wt[None, p, :]
        q[j:, j:] = c
    return q, d


# ------------------------------------------------------------------------------------
# The tests.
# ------------------------------------------------------------------------------------


def gaussian(shape: tuple[int, int], seed: int = 0) -> F64:
    return np.random.default_rng([seed, *shape]).standard_normal(shape)


def degenerate(shape: tuple[int, int]) -> F64:
    """Identity reflectors (a column zero below the diagonal), alpha = +0.0 and −0.0, and a negative alpha."""
    a = gaussian(shape, 1)
    a[3:, 2] = 0.0
    a[4, 4] = 0.0
    a[5, 5] = -0.0
    a[6, 6] = -abs(a[6, 6])
    a[shape[0] - 2 :, shape[1] - 1] = 0.0
    return a


def drawn(m: int, n: int) -> Callable[[], F64]:
    return lambda: gaussian((m, n))


INPUTS: dict[str, Callable[[], F64]] = {
    **{f"gaussian {m}x{n}": drawn(m, n) for m, n in [(1, 1), (5, 1), (7, 3), (64, 64), (96, 64)]},
    # across the block (64), the micro-tile (4 rows × 8 columns) and the row-block (64) edges
    **{f"gaussian {m}x{n}": drawn(m, n) for m, n in [(130, 70), (300, 33), (257, 129), (200, 193)]},
    # several column chunks of the parallel split
    "gaussian 300x290": drawn(300, 290),
    "gaussian 9x9 scaled by 1e150": lambda: gaussian((9, 9)) * 1e150,
    "degenerate 40x12": lambda: degenerate((40, 12)),
    "degenerate 70x70": lambda: degenerate((70, 70)),
    "upper triangular 8x5 (every reflector the identity)": lambda: np.triu(gaussian((8, 5))) - np.eye(8, 5),
}


@pytest.mark.parametrize("name", list(INPUTS))
def test_kernel_reproduces_the_documented_bytes(name: str) -> None:
    a = INPUTS[name]()
    before = a.copy()
    q, d = orthogonal_q(a)
    ref_q, ref_d = reference(a)
    assert q.dtype == np.float64 and q.shape == a.shape and q.flags.c_contiguous
    assert d.dtype == np.float64 and d.shape == (a.shape[1],)
    assert q.tobytes() == ref_q.tobytes(), f"max diff {np.abs(q - ref_q).max():.3g}"
    assert d.tobytes() == ref_d.tobytes()
    assert a.tobytes() == before.tobytes(), "the input is only read"


def test_upper_triangular_input_gives_the_identity() -> None:
    a = np.triu(gaussian((8, 5))) - np.eye(8, 5)
    q, d = orthogonal_q(a)
    assert np.array_equal(q, np.eye(8, 5))
    assert np.array_equal(d, np.where(np.diagonal(a) < 0.0, -1.0, 1.0))


def lapack_q(a: F64) -> F64:
    """dorgqr on the reflectors of step 1 (a correctness check of the formula, not of bytes)."""
    tau, w, _ = reference_reflectors(a)
    v = np.asfortranarray(np.tril(a, -1) * np.where(tau == 0.0, 0.0, w)[None, :])
    lwork = int(scipy.linalg.lapack.dorgqr(v, tau, lwork=-1)[1][0])
    q, _, info = scipy.linalg.lapack.dorgqr(v, tau, lwork=lwork)
    assert info == 0
    return np.asarray(q, dtype=np.float64)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 64), (130, 70), (257, 129), (500, 100), (700, 640)])
def test_orthonormal_and_equal_to_dorgqr(shape: tuple[int, int]) -> None:
    a = gaussian(shape, 2)
    q, d = orthogonal_q(a)
    assert np.abs(q.T @ q - np.eye(shape[1])).max() < 1e-12
    assert np.abs(q - lapack_q(a)).max() < 1e-12
    assert set(np.unique(d)) <= {-1.0, 1.0}


def test_degenerate_input_equals_dorgqr() -> None:
    a = degenerate((70, 70))
    q, _ = orthogonal_q(a)
    assert np.abs(q - lapack_q(a)).max() < 1e-12


class Backwards(Executor):
    """Runs the parts one by one in reverse order: the order in which parts finish must not matter."""

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1) -> Iterator[T]:
        calls = list(zip(*iterables, strict=True))
        results = [fn(*args) for args in reversed(calls)]
        return iter(results[::-1])


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, Executor | None]]:
    with ThreadPoolExecutor(2) as two, ThreadPoolExecutor(3) as three:
        yield {"serial": None, "2 threads": two, "3 threads": three, "backwards": Backwards()}


@pytest.mark.parametrize("shape", [(600, 520), (1100, 1030)])
def test_thread_count_does_not_change_bytes(shape: tuple[int, int], pools: dict[str, Executor | None]) -> None:
    a = gaussian(shape, 3)
    digests = {name: hashlib.sha256(b"".join(x.tobytes() for x in orthogonal_q(a, pool))).hexdigest() for name, pool in pools.items()}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("width", [8, 24, 64, 72, 256])
def test_column_chunks_do_not_change_bytes(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    a = gaussian((520, 300), 4)
    expected = orthogonal_q(a)[0].tobytes()
    monkeypatch.setattr(householder, "_chunk_width", lambda m, n: width)
    with ThreadPoolExecutor(2) as pool:
        assert orthogonal_q(a, pool)[0].tobytes() == expected


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 3), np.float32),
        np.asfortranarray(gaussian((4, 3))),
        np.zeros(4),
        np.zeros((3, 4)),
        np.zeros((4, 0)),
        np.where(np.arange(12).reshape(4, 3) == 7, np.nan, 1.0),
        np.where(np.arange(12).reshape(4, 3) == 10, np.inf, 1.0),
    ],
    ids=["float32", "fortran order", "1-d", "wide", "no columns", "nan", "inf"],
)
def test_rejects_what_has_no_result(bad: F64) -> None:
    with pytest.raises(ValueError, match="a must"):
        orthogonal_q(bad)


# Other CPU targets and BLAS kernels, each in a fresh interpreter with its own numba cache.

DIGEST_SCRIPT = """
import hashlib, json
import numpy as np
from service.core.algorithms.v2.householder import orthogonal_q
rng = np.random.default_rng(0)
out = []
for shape in [(130, 70), (300, 200)]:
    q, d = orthogonal_q(rng.standard_normal(shape))
    out.append([hashlib.sha256(q.tobytes()).hexdigest(), hashlib.sha256(d.tobytes()).hexdigest()])
print(json.dumps(out))
"""

TARGETS: dict[str, dict[str, str]] = {
    "generic cpu (x86-64, SSE2 only)": {"NUMBA_CPU_NAME": "generic"},
    "haswell cpu (AVX2, FMA)": {"NUMBA_CPU_NAME": "haswell"},
    "host cpu": {},
    "host cpu, OpenBLAS Haswell kernel, 1 thread": {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"},
}


@pytest.fixture(scope="module")
def target_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.Popen[str]]:
    """All rows at once (they compile in parallel), each with an empty numba cache of its own."""
    started = {}
    for row, extra in TARGETS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "OPENBLAS_"))}
        env.update(extra, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba")), PYTHONPATH=str(ROOT))
        started[row] = subprocess.Popen(
            [sys.executable, "-c", DIGEST_SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return started


@pytest.mark.slow
@pytest.mark.parametrize("row", list(TARGETS))
def test_cpu_target_does_not_change_bytes(row: str, target_runs: dict[str, subprocess.Popen[str]]) -> None:
    out, err = target_runs[row].communicate(timeout=600)
    assert target_runs[row].returncode == 0, err[-3000:]
    rng = np.random.default_rng(0)
    here = []
    for shape in [(130, 70), (300, 200)]:
        q, d = orthogonal_q(rng.standard_normal(shape))
        here.append([hashlib.sha256(q.tobytes()).hexdigest(), hashlib.sha256(d.tobytes()).hexdigest()])
    assert json.loads(out.strip().splitlines()[-1]) == here
