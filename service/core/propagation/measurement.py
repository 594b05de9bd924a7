"""The measured pass: forward and backward through the very tensors ``/init`` serves, in numpy and float32 BLAS.

See the package docstring for what is measured and why float32 BLAS on a rescaled
signal is exact enough for a measurement (nothing served passes through it).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import threadpoolctl

from ..spec import ELEMENTWISE, ResolvedSpec
from ..streams import Tensor, inner_executor
from .networks import Layer, Network

Array = np.ndarray[Any, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Measurement:
    """Per layer: the measured mean squares of h_l and of ∂L/∂h_l."""

    forward: tuple[float, ...]
    backward: tuple[float, ...]


class PropagationCancelledError(Exception):
    """The pass was stopped by its ``halt`` event (the client went away)."""


def _served(spec: ResolvedSpec) -> Array:
    # The pass itself runs in a block-pool worker: its tensor's chunks go to the inner pool,
    # as /stats does, or several passes at once would wait on chunks no block worker is free to fill.
    return Tensor(spec).array(executor=inner_executor())


class _InThisThread(Executor):
    """An executor that runs each task at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


def _weights(layers: Sequence[Layer]) -> Iterator[Array]:
    """Each layer's weight matrix in turn, the next one filled on the inner pool while the caller multiplies by this one.

    The pass runs BLAS on one thread: the core beside it generates the next weight (one inner
    task, its chunks in that task's thread, so it queues nothing more). Only elementwise
    weights are made ahead: orthogonal, sparse and delta-orthogonal ones queue their own
    parts on the inner pool, so they are made in the caller's thread when their turn comes.
    Two weights are alive at once (``measure_bytes``);
    a pass stopped by its halt event leaves at most one weight being made.
    """

    def start(layer: Layer) -> Callable[[], Array]:
        if not isinstance(layer.weight.distribution, ELEMENTWISE):
            return partial(_weight_matrix, layer)
        return inner_executor().submit(_weight_matrix, layer, _IN_THIS_THREAD).result

    pending = [start(layer) for layer in layers[:1]]
    for i in range(len(layers)):
        current = pending.pop()
        pending.extend(start(layer) for layer in layers[i + 1 : i + 2])
        yield current()


_IN_THIS_THREAD = _InThisThread()


def _weight_matrix(layer: Layer, executor: Executor | None = None) -> Array:
    """The served weight as an (out, in·∏kernel) matrix, input channel major, kernel offsets in C order."""
    w = Tensor(layer.weight).array(executor=executor or inner_executor())
    if layer.weight.convention != "torch":  # (*kernel, in, out) → (out, in, *kernel)
        k = len(layer.kernel)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1) if k else w.T
    with np.errstate(over="ignore"):  # float64 weights past float32's range: infinite, and measured so (null)
        return np.ascontiguousarray(w.reshape(layer.width, -1), dtype=np.float32)


def _offsets(kernel: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(o - k // 2 for o, k in zip(offset, kernel, strict=True)) for offset in itertools.product(*(range(k) for k in kernel))]


def _unfold(x: Array, kernel: tuple[int, ...]) -> Array:
    """(batch, *spatial, c) → (batch·positions, c·∏kernel): circular same-padding patches."""
    if not kernel:
        return x
    axes = tuple(range(1, 1 + len(kernel)))
    shifted = [np.roll(x, shift=tuple(-o for o in off), axis=axes) for off in _offsets(kernel)]
    patches = np.stack(shifted, axis=-1)  # (batch, *spatial, c, K)
    return patches.reshape(-1, x.shape[-1] * len(shifted))


def _fold(grad: Array, shape: tuple[int, ...], kernel: tuple[int, ...]) -> Array:
    """The transpose of :func:`_unfold`: patch gradients summed back onto their positions."""
    if not kernel:
        return grad
    offsets = _offsets(kernel)
    patches = grad.reshape(*shape, len(offsets))
    axes = tuple(range(1, 1 + len(kernel)))
    out = np.zeros(shape)
    for j, off in enumerate(offsets):
        out += np.roll(patches[..., j], shift=off, axis=axes)
    return out


_blas_lock = threading.Lock()
_blas_pinned = False


def _single_threaded_blas() -> None:
    """Pin the process's BLAS to one thread, once (threadpoolctl; OpenBLAS's count is process-wide, not per thread).

    Why: OpenBLAS's worker threads spin while they wait for each other. Passes run in the
    block pool, one per core, and the machine is shared: two BLAS threads per pass then
    oversubscribe the cores and the spinning thread burns the slice its partner needs.
    Measured on the 2 shared cores of docs/benchmarks.md: 256×1024 @ 1024×1024 in float32
    at 9 GFLOP/s with OpenBLAS's 2 threads, 39–50 GFLOP/s with one. Nothing served passes
    through BLAS (see REFERENCE §6), so the count changes no bytes; a context manager
    would not do, as concurrent passes would restore each other's count.
    """
    global _blas_pinned
    with _blas_lock:
        if not _blas_pinned:
            threadpoolctl.threadpool_limits(limits=1, user_api="blas")
            _blas_pinned = True


def _matmul(x: Array, w_t: Array) -> Array:
    """x @ w_t in float32 BLAS on x rescaled to unit RMS, the scale restored in float64."""
    rms = math.sqrt(float(np.mean(np.square(x)))) if x.size else 0.0
    if rms == 0.0 or not math.isfinite(rms):
        return (x.astype(np.float32) @ w_t).astype(np.float64)
    return (np.asarray(x / rms, dtype=np.float32) @ w_t).astype(np.float64) * rms


def _layer_norm(x: Array) -> tuple[Array, Array]:
    mu = x.mean(axis=-1, keepdims=True)
    sigma = np.sqrt(x.var(axis=-1, keepdims=True))
    sigma = np.where(sigma > 0, sigma, 1.0)
    return (x - mu) / sigma, sigma


def measure(network: Network, halt: threading.Event | None = None) -> Measurement:
    """The real pass of the module docstring through the served tensors (BLAS matmuls, float32 on a rescaled signal).

    A signal that leaves float32's or float64's range is measured as infinite or NaN (the
    answer says null), as the theory's recursion is: no floating-point warning is raised.
    """
    with np.errstate(all="ignore"):
        return _measure(network, halt)


def _measure(network: Network, halt: threading.Event | None) -> Measurement:
    _single_threaded_blas()
    rng = np.random.default_rng([network.seed, 0x70726F70])  # "prop": the batch, apart from any served stream
    shape = (network.batch, *network.spatial)
    x = rng.standard_normal((*shape, network.input_width)) * math.sqrt(network.input_variance)
    out_grad = rng.standard_normal((*shape, network.layers[-1].width))
    kept: list[tuple[Array, Array | None, Array | None]] = []
    forward: list[float] = []
    for layer, w in zip(network.layers, _weights(network.layers), strict=True):
        if halt is not None and halt.is_set():
            raise PropagationCancelledError
        u, sigma = _layer_norm(x) if layer.norm else (x, None)
        h = _matmul(_unfold(u, layer.kernel), w.T).reshape(*shape, layer.width)
        if layer.bias is not None:
            h += _served(layer.bias).astype(np.float64)
        forward.append(float(np.mean(np.square(h))))
        y = layer.activation.phi(h)
        x = x + layer.multiplier * y if layer.residual else y
        kept.append((layer.activation.dphi(h).astype(np.float32), u.astype(np.float32) if layer.norm else None, sigma))
    backward = [0.0] * len(network.layers)
    g = out_grad
    # Backward needs every weight but the first layer's (unless residual), last to first.
    needed = [la for i, la in reversed(list(enumerate(network.layers))) if i > 0 or la.residual]
    back_weights = _weights(needed)
    for i in range(len(network.layers) - 1, -1, -1):
        if halt is not None and halt.is_set():
            raise PropagationCancelledError
        layer = network.layers[i]
        dphi, u32, sigma = kept.pop()
        delta = g * dphi * (layer.multiplier if layer.residual else 1.0)
        backward[i] = float(np.mean(np.square(delta)))
        if i == 0 and not layer.residual:
            break
        w = next(back_weights)
        in_shape = (*shape, layer.in_width)
        gu = _fold(_matmul(delta.reshape(-1, layer.width), w), in_shape, layer.kernel).reshape(in_shape)
        if layer.norm is not None:
            assert u32 is not None
            assert sigma is not None
            u = u32.astype(np.float64)
            gu = (gu - gu.mean(axis=-1, keepdims=True) - u * np.mean(gu * u, axis=-1, keepdims=True)) / sigma
        g = g + gu if layer.residual else gu
    return Measurement(tuple(forward), tuple(backward))
