"""``tensorinit.torch.lsuv`` against the real service: unit variance layer by layer, reproducibly.

Every std is measured again here, independently of the code under test: forward hooks
collect each layer's outputs, and numpy computes their population std in float64. The
orthogonal starts come from the engine (``service.core``), the bytes the service defines.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
import torch
from tensorinit import AsyncClient, Client, ValidationError
from tensorinit.torch import LAYER_TYPES, LayerReport, lsuv
from torch import nn

from service.core import generate, resolve

TOL = 0.1
MLP_WIDTHS = (32, 64, 96, 48, 64, 128, 64, 32, 80, 64, 16)  # 10 linear layers, wide and narrow


@pytest.fixture
def client(live_url: str) -> Iterator[Client]:
    with Client(live_url) as c:
        yield c


def tanh_mlp(torch_seed: int = 0) -> nn.Sequential:
    """Linear → Tanh, ten times; torch's own init (seeded) is what lsuv must overwrite."""
    torch.manual_seed(torch_seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(MLP_WIDTHS):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers)


def seeded_batch(*shape: int, seed: int = 1, std: float = 3.0, mean: float = 0.5) -> torch.Tensor:
    """Far from unit variance on purpose, so that the first layer has to be rescaled."""
    return mean + std * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def output_stds(model: nn.Module, batch: torch.Tensor) -> dict[str, float]:
    """Population std of every linear/conv layer's outputs (all its calls pooled), in eval mode, by numpy."""
    outputs: dict[str, list[np.ndarray]] = {}

    def keep(name: str) -> Any:
        return lambda module, args, out: outputs.setdefault(name, []).append(out.detach().double().numpy().ravel())

    hooks = [m.register_forward_hook(keep(name)) for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    return {name: float(np.concatenate(parts).std()) for name, parts in outputs.items()}


def state_bytes(model: nn.Module) -> dict[str, bytes]:
    return {name: t.detach().contiguous().numpy().tobytes() for name, t in model.state_dict().items()}


def orthogonal_start(shape: tuple[int, ...], seed: int, name: str) -> np.ndarray:
    return generate(resolve("orthogonal", shape, seed=seed, name=name))


def test_every_layer_of_a_10_layer_tanh_mlp_reaches_unit_std(client: Client) -> None:
    model, x = tanh_mlp(), seeded_batch(256, 32)
    report = lsuv(model, x, seed=3, client=client, tol=TOL)

    assert [r.name for r in report] == [str(2 * i) for i in range(10)]
    assert all(isinstance(r, LayerReport) and r.reached and r.converged for r in report)
    measured = output_stds(model, x)
    assert len(measured) == 10
    for r in report:
        assert abs(measured[r.name] - 1.0) < TOL, r
        assert r.std_after == pytest.approx(measured[r.name], rel=1e-9)
        assert r.std_before is not None and r.std_after is not None
        if r.iterations == 0:  # the orthogonal start was already within tolerance
            assert abs(r.std_before - 1.0) < TOL and r.std_after == r.std_before and r.gain == 1.0
        else:  # zero bias: the output scales exactly with W, so one division lands on 1
            assert r.iterations == 1 and r.std_after == pytest.approx(1.0, abs=1e-6)
            assert r.gain == pytest.approx(1.0 / r.std_before, rel=1e-12)
    for i in range(10):
        assert not model.get_parameter(f"{2 * i}.bias").any()

    # The first layer's std before, by hand: the served orthogonal (64, 32) start applied to the batch.
    q = orthogonal_start((64, 32), seed=3, name="0.weight").astype(np.float64)
    by_hand = float((x.double().numpy() @ q.T).std())
    assert report[0].std_before == pytest.approx(by_hand, rel=1e-6)
    assert report[0].iterations == 1 and by_hand > 1 + TOL  # this batch is far from unit variance


def test_weights_are_the_services_orthogonal_times_the_reported_gain(client: Client) -> None:
    model, x = tanh_mlp(), seeded_batch(128, 32)
    report = lsuv(model, x, seed=11, client=client)
    # The README's replay: the same tensors from the service alone, by an explicit gain on each spec.
    replay = tanh_mlp(torch_seed=5)
    rules: list[tuple[str, Any]] = [(f"{r.name}.weight", {"scheme": "orthogonal", "gain": r.gain}) for r in report]
    rules += [(f"{r.name}.bias", "zeros") for r in report] + [("*", None)]
    client.init_module(replay, rules, seed=11)
    for r in report:
        got, want = model.get_parameter(f"{r.name}.weight").detach(), replay.get_parameter(f"{r.name}.weight").detach()
        # One float32 rounding apart at most: both are float32 of Q64·gain, ours via float32(Q64).
        torch.testing.assert_close(got, want, rtol=2**-23, atol=0.0)
        assert torch.equal(model.get_parameter(f"{r.name}.bias"), replay.get_parameter(f"{r.name}.bias"))


def test_same_seed_and_batch_give_identical_weights_whatever_the_model_held(client: Client) -> None:
    x = seeded_batch(64, 32, seed=2)
    first, second = tanh_mlp(torch_seed=0), tanh_mlp(torch_seed=1)
    assert state_bytes(first) != state_bytes(second)
    report_first = lsuv(first, x, seed=5, client=client)
    report_second = lsuv(second, x, seed=5, client=client)
    assert state_bytes(first) == state_bytes(second)
    assert report_first == report_second

    other_seed = tanh_mlp()
    assert lsuv(other_seed, x, seed=6, client=client) != report_first
    assert state_bytes(other_seed) != state_bytes(first)


def test_without_a_client_it_uses_the_environments_service(client: Client, live_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORINIT_URL", live_url)
    x = seeded_batch(32, 32)
    implicit, explicit = tanh_mlp(), tanh_mlp()
    assert lsuv(implicit, x, seed=4) == lsuv(explicit, x, seed=4, client=client)
    assert state_bytes(implicit) == state_bytes(explicit)


class ConvNet(nn.Module):
    """Conv → BatchNorm → ReLU → Dropout, a grouped conv, a transposed conv, a linear head, and an unused head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.5)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(8 * 4 * 4, 10)
        self.aux = nn.Linear(32, 10)  # declared, never called by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.norm(self.stem(x))))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.up(x))
        out: torch.Tensor = self.head(self.pool(x).flatten(1))
        return out


def test_a_conv_net_in_mixed_modes_with_an_unreached_head(client: Client) -> None:
    torch.manual_seed(0)
    model = ConvNet()
    model.train()
    model.norm.eval()  # mixed on purpose: every module's own flag must come back
    modes = {name: m.training for name, m in model.named_modules()}
    norm_state = {k: v.clone() for k, v in model.norm.state_dict().items()}
    x = seeded_batch(16, 3, 8, 8, seed=7)

    report = lsuv(model, x, seed=21, client=client)

    assert {name: m.training for name, m in model.named_modules()} == modes
    for key, value in model.norm.state_dict().items():  # eval mode: running stats untouched, no batch counted
        assert torch.equal(value, norm_state[key]), key
    assert [r.name for r in report] == ["stem", "grouped", "up", "head", "aux"]
    measured = output_stds(model, x)
    for r in report[:4]:
        assert r.reached and r.converged and abs(measured[r.name] - 1.0) < TOL, r
        # Dropout was off in lsuv's passes: the eval-mode measurement here is the same number.
        assert r.std_after == pytest.approx(measured[r.name], rel=1e-9)
    aux = report[4]
    assert aux == LayerReport("aux", None, None, 0, False, 1.0) and not aux.reached
    assert "aux" not in measured
    # Unreached, it keeps the served orthogonal start and a zero bias.
    assert model.aux.weight.detach().numpy().tobytes() == orthogonal_start((10, 32), seed=21, name="aux.weight").tobytes()
    assert not model.aux.bias.any()


LAYER_CASES = [
    pytest.param(lambda: (nn.Linear(24, 40), nn.Linear(40, 12)), (64, 24), id="linear"),
    pytest.param(lambda: (nn.Conv1d(4, 8, 3), nn.Conv1d(8, 6, 3, padding=1)), (16, 4, 20), id="conv1d"),
    pytest.param(lambda: (nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(8, 8, 1, groups=8)), (8, 3, 9, 9), id="conv2d-depthwise"),
    pytest.param(lambda: (nn.Conv3d(2, 4, 3), nn.Conv3d(4, 3, 2)), (4, 2, 6, 6, 6), id="conv3d"),
    pytest.param(lambda: (nn.ConvTranspose1d(4, 6, 3), nn.ConvTranspose1d(6, 2, 2, stride=2)), (16, 4, 10), id="conv_transpose1d"),
    pytest.param(lambda: (nn.ConvTranspose2d(3, 6, 3, groups=3), nn.ConvTranspose2d(6, 4, 2)), (8, 3, 5, 5), id="conv_transpose2d"),
    pytest.param(lambda: (nn.ConvTranspose3d(2, 3, 2), nn.ConvTranspose3d(3, 2, 2)), (4, 2, 3, 3, 3), id="conv_transpose3d"),
]


@pytest.mark.parametrize(("make", "shape"), LAYER_CASES)
def test_every_layer_kind_reaches_unit_std(client: Client, make: Any, shape: tuple[int, ...]) -> None:
    first, second = make()
    model = nn.Sequential(first, nn.Tanh(), second)
    x = seeded_batch(*shape, seed=3)
    report = lsuv(model, x, seed=1, client=client)
    assert [r.name for r in report] == ["0", "2"] and all(r.converged for r in report)
    for name, std in output_stds(model, x).items():
        assert abs(std - 1.0) < TOL, name


class DeclaredBackwards(nn.Module):
    """``late`` is declared first but runs second: layers go in the order the forward calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Linear(48, 24)
        self.early = nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.late(torch.tanh(self.early(x)))
        return out


class Recurrent(nn.Module):
    """``block`` runs twice per forward, the second time on its own (squashed) output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.block = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.block(torch.tanh(self.inp(x))))
        out: torch.Tensor = self.block(h)
        return out


@pytest.mark.parametrize(
    ("model_type", "order"),
    [
        pytest.param(DeclaredBackwards, ["early", "late"], id="declared-backwards"),
        pytest.param(Recurrent, ["inp", "block"], id="called-twice"),
    ],
)
def test_layers_go_in_forward_order_and_shared_ones_pool_their_calls(client: Client, model_type: type[nn.Module], order: list[str]) -> None:
    """Processing ``late`` first would let the later rescaling of ``early`` undo it; ``block`` is measured over both calls."""
    model, x = model_type(), seeded_batch(128, 16, seed=4)
    report = lsuv(model, x, seed=2, client=client, tol=0.01)
    assert [r.name for r in report] == order and all(r.converged for r in report)
    measured = output_stds(model, x)  # a layer's outputs of every call, concatenated
    for r in report:
        assert abs(measured[r.name] - 1.0) < 0.01, r
        assert r.std_after == pytest.approx(measured[r.name], rel=1e-9)


def test_kept_biases_stay_and_the_loop_still_converges(client: Client) -> None:
    model, x = tanh_mlp(torch_seed=3), seeded_batch(256, 32)
    biases = {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith("bias")}
    report = lsuv(model, x, seed=8, client=client, zero_bias=False, tol=0.01)
    for name, bias in biases.items():
        assert torch.equal(model.get_parameter(name), bias), name
    assert all(r.converged for r in report)
    for name, std in output_stds(model, x).items():
        assert abs(std - 1.0) < 0.01, name


def test_a_bias_too_wide_for_unit_std_stops_after_max_iter(client: Client) -> None:
    """Outputs c·Wx + b with b = ±3 across features: their std stays near 3 however small c gets."""
    model = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        model.get_parameter("0.bias").copy_(torch.tensor([3.0, -3.0, 3.0, -3.0]))
    report = lsuv(model, seeded_batch(64, 8), seed=0, client=client, zero_bias=False, max_iter=4)
    (r,) = report
    assert r.iterations == 4 and not r.converged and r.reached
    assert r.std_before is not None and r.std_after is not None
    assert r.std_after > 1 + TOL and r.std_after < r.std_before
    start = torch.from_numpy(orthogonal_start((4, 8), seed=0, name="0.weight")).double()
    torch.testing.assert_close(model.get_parameter("0.weight").detach().double(), start * r.gain, rtol=2**-23, atol=0.0)


def test_a_layer_with_zero_output_std_is_left_alone(client: Client) -> None:
    model = tanh_mlp()
    report = lsuv(model, torch.zeros(8, 32), seed=0, client=client)
    assert all(r.reached and r.std_before == 0.0 and r.iterations == 0 and not r.converged and r.gain == 1.0 for r in report)
    assert model.get_parameter("0.weight").detach().numpy().tobytes() == orthogonal_start((64, 32), seed=0, name="0.weight").tobytes()


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.emb(idx))
        return out


def lazy() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(4))


BAD_CALLS = [
    pytest.param(lambda: nn.Sequential(nn.Tanh(), nn.LayerNorm(32)), {}, ValueError, "no layer to initialize", id="no-layers"),
    *(
        pytest.param(tanh_mlp, {"tol": tol}, ValueError, r"tol: got .*0 < tol < 1", id=f"tol={tol!r}")
        for tol in (0, 0.0, -0.1, 1, 1.5, math.nan, math.inf, "0.1", True, None)
    ),
    *(
        pytest.param(tanh_mlp, {"max_iter": n}, ValueError, r"max_iter: got .*integer ≥ 1", id=f"max_iter={n!r}")
        for n in (0, -1, 1.5, True, "3")
    ),
    *(
        pytest.param(tanh_mlp, {"batch": b}, TypeError, "batch: got", id=f"batch={type(b).__name__}")
        for b in (None, 3, "x", np.zeros((2, 32), np.float32))
    ),
    pytest.param(tanh_mlp, {"batch": torch.zeros(0, 32)}, ValueError, "empty tensor", id="empty-batch"),
    pytest.param(Tied, {"batch": torch.arange(4)}, ValueError, r"head\.weight is the same tensor as emb\.weight", id="tied"),
    pytest.param(
        lambda: nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(32, 4))),
        {},
        ValueError,
        r"0\.weight is parametrized",
        id="parametrized",
    ),
    pytest.param(lazy, {}, ValueError, r"0\.weight is uninitialized", id="lazy"),
    pytest.param(tanh_mlp, {"client": AsyncClient}, TypeError, "lsuv is synchronous", id="async-client"),
    pytest.param(tanh_mlp, {"seed": -1}, ValidationError, "seed", id="seed-from-the-service"),
]


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), BAD_CALLS)
def test_bad_calls_raise_before_the_model_changes(client: Client, make: Any, kwargs: dict[str, Any], error: Any, match: str) -> None:
    model = make()
    model.train()
    before = {name: t.detach().clone() for name, t in model.state_dict().items() if not isinstance(t, nn.parameter.UninitializedParameter)}
    call = {"batch": seeded_batch(4, 32), "seed": 0, "client": client, **kwargs}
    if call["client"] is AsyncClient:
        closed = AsyncClient(client.base_url)
        asyncio.run(closed.close())  # lsuv must refuse it before any use
        call["client"] = closed
    with pytest.raises(error, match=match):
        lsuv(model, call.pop("batch"), **call)
    after = {name: t for name, t in model.state_dict().items() if not isinstance(t, nn.parameter.UninitializedParameter)}
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(m.training for m in model.modules())


def test_torch_is_imported_by_tensorinit_torch_only() -> None:
    code = "import sys, tensorinit; assert 'torch' not in sys.modules; import tensorinit.torch; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
