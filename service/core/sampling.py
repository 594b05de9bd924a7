"""Drawing numbers: stream keys, block generators and the truncated-normal samplers.

Hand-written because no library does what we need here: numpy has no truncated
normal, and scipy's ``truncnorm.rvs`` is an inverse-CDF sampler (slow, and its bytes
would depend on scipy's special-function build). The samplers below use only numpy's
``Generator`` primitives, so their output is fixed by the bit generator's raw stream
and numpy's documented algorithms for ``standard_normal``, ``random`` and
``standard_exponential``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import numpy as np

BLOCK_ELEMENTS = 1 << 18
"""Elements per block: every block is drawn from its own generator (algorithm constant)."""

KEY_DOMAIN = b"tensorinit:v1\x00"
_WORDS = np.dtype("<u4")

TruncMethod = Literal["normal_rejection", "uniform_rejection", "exponential_rejection"]


def stream_key(seed: int, name: str, stream: str = "values") -> int:
    """256-bit key of one named random stream of a tensor.

    sha256(b"tensorinit:v1\\0" + seed as 8 little-endian bytes + stream + b"\\0" + UTF-8 name),
    read as a little-endian integer.
    """
    h = hashlib.sha256(KEY_DOMAIN)
    h.update(seed.to_bytes(8, "little"))
    h.update(stream.encode("ascii") + b"\x00")
    h.update(name.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


def block_rng(key: int, index: int) -> np.random.Generator:
    """The generator of block ``index``: SFC64 seeded by SeedSequence(key, spawn_key=(index,)).

    The key goes in as the uint32 words numpy would split it into (least significant
    first, as many as it needs, at least one): the same entropy, so the same state
    (a test holds them equal), without numpy's per-word Python loop for an int, which
    cost more than the rest of a small block's setup.
    """
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(key_words(key), spawn_key=(index,))))


def key_words(key: int) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """``key`` as numpy's SeedSequence reads an int: little-endian uint32 words, no leading zero words."""
    count = max(1, -(-key.bit_length() // 32))
    words = np.frombuffer(key.to_bytes(4 * count, "little"), dtype=_WORDS)
    return words if np.uint32 == _WORDS else words.astype(np.uint32)  # SeedSequence copies it either way


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def normal_mass(alpha: float, beta: float) -> float:
    """P(alpha <= Z <= beta) for a standard normal Z, accurate in either tail."""
    if alpha >= 0:
        return 0.5 * (math.erfc(alpha / math.sqrt(2.0)) - math.erfc(beta / math.sqrt(2.0)))
    if beta <= 0:
        return normal_mass(-beta, -alpha)
    return 1.0 - norm_cdf(alpha) - (1.0 - norm_cdf(beta))


def trunc_method(alpha: float, beta: float) -> TruncMethod:
    """Which sampler draws N(0, 1) conditioned on [alpha, beta] (part of the algorithm).

    mass >= 0.25: redraw plain normals until inside (acceptance >= 25%).
    Otherwise, following Robert (1995), "Simulation of truncated normal variables":
    an interval inside one tail that is wide enough uses a translated-exponential
    proposal with the optimal rate; any other uses a uniform proposal on the interval.
    """
    if normal_mass(alpha, beta) >= 0.25:
        return "normal_rejection"
    if alpha >= 0 or beta <= 0:
        a, b = (alpha, beta) if alpha >= 0 else (-beta, -alpha)
        root = math.sqrt(a * a + 4.0)
        threshold = a + 2.0 / (a + root) * math.exp((a * a - a * root) / 4.0 + 0.5)
        if b > threshold:
            return "exponential_rejection"
    return "uniform_rejection"


def standard_truncnorm(
    rng: np.random.Generator,
    n: int,
    alpha: float,
    beta: float,
    dtype: np.dtype[Any],
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """n draws of N(0, 1) conditioned on [alpha, beta], in ``dtype`` (float32 or float64).

    Rejected positions are redrawn in rounds, in index order, from the same generator,
    so the result depends only on the generator's state and (alpha, beta, n, dtype).
    """
    method = trunc_method(alpha, beta)
    if method == "normal_rejection":
        z = rng.standard_normal(n, dtype=dtype) if out is None else rng.standard_normal(dtype=dtype, out=out)
        lo, hi = dtype.type(alpha), dtype.type(beta)
        bad = np.flatnonzero((z < lo) | (z > hi))
        while bad.size:
            r = rng.standard_normal(bad.size, dtype=dtype)
            ok = (r >= lo) & (r <= hi)
            z[bad[ok]] = r[ok]
            bad = bad[~ok]
        return z
    res = np.empty(n, np.float64)
    todo = np.arange(n)
    if method == "uniform_rejection":
        m = 0.0 if alpha < 0 < beta else (alpha if alpha >= 0 else beta)
        while todo.size:
            z = alpha + (beta - alpha) * rng.random(todo.size)
            u = rng.random(todo.size)
            ok = u <= np.exp((m * m - z * z) / 2.0)
            res[todo[ok]] = z[ok]
            todo = todo[~ok]
    else:
        sign = 1.0 if alpha >= 0 else -1.0
        a, b = (alpha, beta) if alpha >= 0 else (-beta, -alpha)
        lam = (a + math.sqrt(a * a + 4.0)) / 2.0
        while todo.size:
            z = a + rng.standard_exponential(todo.size) / lam
            u = rng.random(todo.size)
            ok = (z <= b) & (u <= np.exp(-((z - lam) ** 2) / 2.0))
            res[todo[ok]] = sign * z[ok]
            todo = todo[~ok]
    if out is None:
        return res.astype(dtype)
    out[...] = res
    return out
