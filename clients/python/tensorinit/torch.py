"""tensorinit for ``torch.nn.Module``: data-dependent initialization (LSUV).

::

    from tensorinit import Client
    from tensorinit.torch import lsuv

    with Client() as client:
        report = lsuv(model, batch, seed=0, client=client)
    assert all(layer.converged for layer in report)

This module needs PyTorch (``pip install 'tensorinit[torch]'``); ``import tensorinit``
alone never imports torch.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

try:
    import torch
    from torch import nn
    from torch.nn.utils import parametrize
except ImportError as exc:  # pragma: no cover -- the test environment has torch
    raise ImportError("tensorinit.torch needs PyTorch: pip install 'tensorinit[torch]'") from exc

from ._client import Client

__all__ = ["LAYER_TYPES", "LayerReport", "lsuv"]

LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
"""The layers :func:`lsuv` initializes (subclasses included): the paper's inner-product and convolution layers."""


@dataclass(frozen=True)
class LayerReport:
    """What :func:`lsuv` did to one layer.

    ``std_before``: the std of the layer's output on the batch when its turn came (the
    layers before it already rescaled, its own weight still orthogonal); ``std_after``:
    the std measured after its last rescaling. Both are None for a layer the batch did
    not reach. ``iterations``: rescalings applied (0 when the orthogonal start was
    already within tolerance, or the layer could not be rescaled). ``gain``: the product
    of the factors applied, so the layer's weight is ``gain`` × its orthogonal start;
    ``{"scheme": "orthogonal", "gain": gain}`` for that name, with the same seed, asks the
    service for the same tensor without any data (equal to float rounding).
    """

    name: str
    std_before: float | None
    std_after: float | None
    iterations: int
    converged: bool
    gain: float

    @property
    def reached(self) -> bool:
        """Whether the batch's forward pass called this layer (with a non-empty output)."""
        return self.std_before is not None


class _Moments:
    """Count, mean and sum of squared deviations of every output a layer gave in one pass.

    A layer called several times in one forward (a shared block) is measured over all its
    calls, pooled with Chan et al.'s update (1979), in float64.
    """

    __slots__ = ("m2", "mean", "n")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, output: torch.Tensor) -> None:
        x = output.detach().to(torch.float64)
        n = x.numel()
        var, mean = torch.var_mean(x, correction=0)
        total = self.n + n
        delta = float(mean) - self.mean
        self.m2 += float(var) * n + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n)


def lsuv(
    model: nn.Module,
    batch: Any,
    *,
    seed: int,
    tol: float = 0.1,
    max_iter: int = 10,
    client: Client | None = None,
    zero_bias: bool = True,
) -> list[LayerReport]:
    """Layer-sequential unit-variance initialization of ``model`` on ``batch``, in place.

    Formula: every linear or conv weight starts orthogonal (W = Q); then, layer by layer
    in the order the forward pass first calls them, W_L ← W_L / std(B_L), B_L the layer's
    output on the batch, repeated until |std(B_L) − 1| < tol or max_iter rescalings.
    std is the population std (ddof 0) over every element of the output, in float64.
    Source: Mishkin & Matas, "All you need is a good init", ICLR 2016, Algorithm 1 (which
    divides by √Var(B_L)); ducha-aiki/LSUV-pytorch ``LSUV.py`` (std of the whole output,
    |std − 1| > std_tol, biases set to 0, forward in eval mode under no_grad).

    The start is one request to the service: ``orthogonal`` (torch flattening, gain 1) for
    the weight of every layer in :data:`LAYER_TYPES`, and ``zeros`` for their biases
    (``zero_bias=True``, as the authors' code does: with a zero bias the output scales
    exactly with W, so one rescaling reaches std 1 and the loop only guards the cases
    where it does not). ``zero_bias=False`` leaves biases as they are; the loop then
    iterates, since Var(cWx + b) is not c²·Var(Wx + b). Every other parameter and buffer
    is left alone. ``seed`` (0 ≤ seed < 2^64) seeds the service's draws; names are
    ``named_parameters()`` names, so the start is the bytes ``init_module`` would give.
    ``client`` is used as is; None opens a :class:`Client` for the call (its base URL
    from ``$TENSORINIT_URL``).

    The measuring passes run ``model(batch)`` (``model(*batch)`` for a tuple or list,
    ``model(**batch)`` for a mapping) under ``torch.no_grad()`` with every module in eval
    mode, so Dropout is off and BatchNorm normalizes with its running statistics and does
    not update them: each pass is deterministic and free of side effects. Every module's
    own ``training`` flag is restored afterwards, also on error. Passes: one, plus one per
    rescaling (each pass measures every layer, so the pass after layer L's last rescaling
    is layer L+1's first measurement).

    The result is deterministic for a given seed, batch and model structure (it does not
    depend on the weights the model held before), on one machine: the stds come from
    torch's forward pass, whose last bits depend on the CPU and BLAS. The reported gains
    pin it everywhere: orthogonal with those gains is the service's bytes on any machine.

    Returns one :class:`LayerReport` per layer: the layers the batch reached, in the
    order they were processed, then those it did not reach (in ``named_modules`` order;
    they keep their orthogonal start, gain 1, ``converged`` False). A layer whose output
    std is 0 or not finite cannot be rescaled: it is left as it is, ``converged`` False.
    A layer that has not converged after ``max_iter`` rescalings keeps its last weight,
    ``converged`` False. Check ``all(r.converged for r in report)``.

    Raises ValueError, before any request, for a bad ``tol`` (0 < tol < 1) or
    ``max_iter`` (an integer ≥ 1), a model without such layers, a layer whose weight (or
    bias, with ``zero_bias``) is tied to another module's or parametrized, or an
    uninitialized lazy layer, or an empty tensor in the batch; TypeError for a batch that
    is not a tensor, tuple, list or mapping, or a ``client`` that is not a
    :class:`Client`. The service's errors are the client's (:class:`~tensorinit.ValidationError`
    for a bad seed, ...), raised before the model is touched. An error of the forward
    pass itself propagates as it is, with the weights partly initialized.
    """
    _check_tol(tol)
    _check_max_iter(max_iter)
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client: got {type(client).__name__}; allowed: a tensorinit.Client (lsuv is synchronous) or None")
    forward = _forward(model, batch)
    layers = _layers(model, zero_bias)
    rules: list[tuple[str, Any]] = []
    for name, module in layers:
        rules.append((glob.escape(_join(name, "weight")), "orthogonal"))
        if zero_bias and module.bias is not None:
            rules.append((glob.escape(_join(name, "bias")), "zeros"))
    rules.append(("*", None))
    if client is None:
        with Client() as own:
            own.init_module(model, rules, seed=seed, buffers=False)
    else:
        client.init_module(model, rules, seed=seed, buffers=False)

    measured: dict[str, _Moments] = {}

    def measure() -> dict[str, _Moments]:
        measured.clear()
        forward()
        return dict(measured)  # insertion order: the order of first calls

    modes = {module: module.training for module in model.modules()}
    hooks = [module.register_forward_hook(_recorder(name, measured)) for name, module in layers]
    try:
        model.eval()
        with torch.no_grad():
            seen = measure()
            by_name = dict(layers)
            reports: list[LayerReport] = []
            for name in list(seen):
                seen, report = _rescale(name, by_name[name], seen, measure, tol, max_iter)
                reports.append(report)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    done = {r.name for r in reports}
    reports += [LayerReport(name, None, None, 0, False, 1.0) for name, _ in layers if name not in done]
    return reports


def _rescale(
    name: str,
    module: nn.Module,
    seen: dict[str, _Moments],
    measure: Callable[[], dict[str, _Moments]],
    tol: float,
    max_iter: int,
) -> tuple[dict[str, _Moments], LayerReport]:
    """Rescale one layer until its output std is within ``tol`` of 1; returns the last pass and the report."""
    weight = module.get_parameter("weight")
    # W = gain · start, recomputed from the start in float64 at each step: one rounding,
    # whatever the number of iterations, so the weight is the service's orthogonal with that gain.
    start = weight.detach().to(torch.float64, copy=True)
    std = seen[name].std if name in seen else None
    before, gain, iterations = std, 1.0, 0
    while std is not None and not _within(std, tol) and iterations < max_iter and math.isfinite(std) and std > 0:
        gain /= std
        weight.copy_(start * gain)
        iterations += 1
        seen = measure()
        # A forward whose path depends on values may stop calling a layer.
        std = seen[name].std if name in seen else None
    converged = std is not None and _within(std, tol)
    return seen, LayerReport(name, before, std, iterations, converged, gain)


def _within(std: float, tol: float) -> bool:
    return abs(std - 1.0) < tol


def _recorder(name: str, measured: dict[str, _Moments]) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.numel():
            measured.setdefault(name, _Moments()).add(output)

    return hook


def _join(module_name: str, role: str) -> str:
    return f"{module_name}.{role}" if module_name else role


def _layers(model: nn.Module, zero_bias: bool) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every layer to initialize, checked to own its weight (and bias)."""
    owner = {id(p): name for name, p in model.named_parameters()}
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES):
            continue
        roles = ["weight"] + (["bias"] if zero_bias and getattr(module, "bias", None) is not None else [])
        for role in roles:
            full = _join(name, role)
            if parametrize.is_parametrized(module, role):
                raise ValueError(f"{full} is parametrized (weight_norm, spectral_norm, ...): LSUV rescales a plain parameter")
            tensor = getattr(module, role)
            if isinstance(tensor, nn.parameter.UninitializedParameter):
                raise ValueError(f"{full} is uninitialized (a lazy module): run one forward pass first, then lsuv")
            if owner.get(id(tensor)) != full:
                shared = owner.get(id(tensor))
                why = f"the same tensor as {shared} (tied)" if shared else "not a parameter of the model"
                raise ValueError(f"{full} is {why}: LSUV rescales each layer's own {role}; untie it first")
        layers.append((name, module))
    if not layers:
        kinds = ", ".join(t.__name__ for t in LAYER_TYPES)
        raise ValueError(f"model: {type(model).__name__} has no layer to initialize; allowed: a model with at least one of {kinds}")
    return layers


def _forward(model: nn.Module, batch: Any) -> Callable[[], object]:
    """A call of ``model`` on ``batch``: a tensor, a tuple or list of arguments, or a mapping of keywords."""
    if isinstance(batch, torch.Tensor):
        tensors, call = [batch], lambda: model(batch)
    elif isinstance(batch, tuple | list):
        tensors, call = [t for t in batch if isinstance(t, torch.Tensor)], lambda: model(*batch)
    elif isinstance(batch, Mapping):
        tensors, call = [t for t in batch.values() if isinstance(t, torch.Tensor)], lambda: model(**batch)
    else:
        raise TypeError(f"batch: got {type(batch).__name__}; allowed: a tensor, a tuple or list of arguments, or a mapping of keywords")
    for tensor in tensors:
        if tensor.numel() == 0:
            raise ValueError(f"batch: got an empty tensor of shape {tuple(tensor.shape)}; allowed: a non-empty batch")
    return call


def _check_tol(tol: object) -> None:
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < 1:
        raise ValueError(f"tol: got {tol!r}; allowed: a number with 0 < tol < 1 (the tolerance on |std − 1|)")


def _check_max_iter(max_iter: object) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: got {max_iter!r}; allowed: an integer ≥ 1 (rescalings per layer)")
