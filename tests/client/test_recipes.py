"""Recipes from the client's side: torch's own reset_parameters and nanoGPT's init as anchors, and the live service.

The torch anchor is the module itself: each module is constructed under a fixed
``torch.manual_seed`` (its constructor runs ``reset_parameters``), and its tensors are
compared with what recipe ``torch`` resolves for the manifest :func:`module_manifest`
builds from the same module: the exact bound (fans computed by hand in the table), a
KS two-sample test of the values pooled over three seeds, and exact values for norms,
zero biases and the padding row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from tensorinit import AsyncClient, Client, PayloadTooLarge, ValidationError
from tensorinit._manifest import module_manifest, tree_manifest
from torch import nn

from bench.recipes import GPT
from service.core import ResolvedSpec, generate
from service.core.recipes import plan_recipe


def dist_of(spec: ResolvedSpec) -> Any:
    """The distribution, untyped: each test knows which kind it holds."""
    return spec.distribution


SEEDS = (0, 1, 2)
KS_ALPHA = 1e-3

# (id, module factory, {tensor name: expected uniform bound, normal std, or exact value})
# Bounds by hand: Linear/Conv 1/√fan_in with fan_in = (in/groups)·prod(kernel);
# ConvTranspose (in, out/groups, *k): fan_in = out/groups·prod(k); xavier √(6/(fi+fo)).
TORCH_MODULES: list[tuple[str, Callable[[], nn.Module], dict[str, tuple[str, float]]]] = [
    ("linear", lambda: nn.Linear(64, 32), {"weight": ("uniform", 1 / 8), "bias": ("uniform", 1 / 8)}),
    ("conv2d", lambda: nn.Conv2d(8, 16, 3), {"weight": ("uniform", 1 / math.sqrt(72)), "bias": ("uniform", 1 / math.sqrt(72))}),
    (
        "conv2d_grouped",
        lambda: nn.Conv2d(8, 16, 3, groups=4),
        {"weight": ("uniform", 1 / math.sqrt(18)), "bias": ("uniform", 1 / math.sqrt(18))},
    ),
    ("conv2d_depthwise", lambda: nn.Conv2d(16, 16, 3, groups=16), {"weight": ("uniform", 1 / 3), "bias": ("uniform", 1 / 3)}),
    ("conv1d", lambda: nn.Conv1d(4, 6, 5), {"weight": ("uniform", 1 / math.sqrt(20)), "bias": ("uniform", 1 / math.sqrt(20))}),
    ("conv3d", lambda: nn.Conv3d(2, 4, 3), {"weight": ("uniform", 1 / math.sqrt(54)), "bias": ("uniform", 1 / math.sqrt(54))}),
    (
        "conv_transpose2d",
        lambda: nn.ConvTranspose2d(8, 12, 3, groups=2),
        {"weight": ("uniform", 1 / math.sqrt(54)), "bias": ("uniform", 1 / math.sqrt(54))},
    ),
    (
        "conv_transpose1d",
        lambda: nn.ConvTranspose1d(6, 4, 3),
        {"weight": ("uniform", 1 / math.sqrt(12)), "bias": ("uniform", 1 / math.sqrt(12))},
    ),
    (
        "conv_transpose3d",
        lambda: nn.ConvTranspose3d(2, 3, 2),
        {"weight": ("uniform", 1 / math.sqrt(24)), "bias": ("uniform", 1 / math.sqrt(24))},
    ),
    ("bilinear", lambda: nn.Bilinear(10, 12, 7), {"weight": ("uniform", 1 / math.sqrt(10)), "bias": ("uniform", 1 / math.sqrt(10))}),
    ("embedding_padded", lambda: nn.Embedding(50, 16, padding_idx=3), {"weight": ("normal", 1.0)}),
    (
        "multihead_attention",
        lambda: nn.MultiheadAttention(32, 4),
        {
            "in_proj_weight": ("uniform", math.sqrt(6 / 128)),
            "in_proj_bias": ("constant", 0.0),
            "out_proj.weight": ("uniform", 1 / math.sqrt(32)),
            "out_proj.bias": ("constant", 0.0),
        },
    ),
    (
        "multihead_attention_kv",
        lambda: nn.MultiheadAttention(32, 4, kdim=16, vdim=8, add_bias_kv=True),
        {
            "q_proj_weight": ("uniform", math.sqrt(6 / 64)),
            "k_proj_weight": ("uniform", math.sqrt(6 / 48)),
            "v_proj_weight": ("uniform", math.sqrt(6 / 40)),
            "bias_k": ("normal", math.sqrt(2 / 64)),
            "bias_v": ("normal", math.sqrt(2 / 64)),
            "in_proj_bias": ("constant", 0.0),
            "out_proj.weight": ("uniform", 1 / math.sqrt(32)),
            "out_proj.bias": ("constant", 0.0),
        },
    ),
    (
        "lstm_2_layers",
        lambda: nn.LSTM(16, 32, num_layers=2),
        {f"{w}_l{k}": ("uniform", 1 / math.sqrt(32)) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in (0, 1)},
    ),
    (
        "gru_bidirectional",
        lambda: nn.GRU(8, 16, bidirectional=True),
        {f"{w}_l0{d}": ("uniform", 0.25) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for d in ("", "_reverse")},
    ),
    ("rnn", lambda: nn.RNN(8, 4), {f"{w}_l0": ("uniform", 0.5) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}),
    ("lstm_proj", lambda: nn.LSTM(8, 16, proj_size=4), {"weight_hr_l0": ("uniform", 0.25), "weight_hh_l0": ("uniform", 0.25)}),
    ("layer_norm", lambda: nn.LayerNorm(16), {"weight": ("constant", 1.0), "bias": ("constant", 0.0)}),
    ("rms_norm", lambda: nn.RMSNorm(16), {"weight": ("constant", 1.0)}),
    (
        "batch_norm",
        lambda: nn.BatchNorm2d(8),
        {"weight": ("constant", 1.0), "bias": ("constant", 0.0), "running_mean": ("constant", 0.0), "running_var": ("constant", 1.0)},
    ),
    ("group_norm", lambda: nn.GroupNorm(2, 8), {"weight": ("constant", 1.0), "bias": ("constant", 0.0)}),
]


def _reference(factory: Callable[[], nn.Module], seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = factory()  # the constructor runs the module's own reset_parameters
    return {n: t.detach().numpy().copy() for n, t in [*module.named_parameters(), *module.named_buffers()] if t.dtype.is_floating_point}


@pytest.mark.parametrize(("factory", "expected"), [pytest.param(f, e, id=i) for i, f, e in TORCH_MODULES])
def test_recipe_torch_is_reset_parameters(factory: Callable[[], nn.Module], expected: dict[str, tuple[str, float]]) -> None:
    manifest, _ = module_manifest(factory())
    ours: dict[str, list[np.ndarray]] = {}
    theirs: dict[str, list[np.ndarray]] = {}
    for seed in SEEDS:
        plan = plan_recipe("torch", manifest, seed=seed)
        specs = {s.name: s for s in plan.specs}
        assert set(specs) == set(expected) | (set(specs) - set(expected))
        for name, (kind, value) in expected.items():
            dist = dist_of(specs[name])
            if kind == "uniform":
                assert (dist.kind, -dist.low, dist.high) == ("uniform", pytest.approx(value, rel=1e-12), pytest.approx(value, rel=1e-12)), (
                    name
                )
            elif kind == "normal":
                assert (dist.kind, dist.mean, dist.std) == ("normal", 0.0, pytest.approx(value, rel=1e-12)), name
            else:
                assert (dist.kind, dist.value) == ("constant", value), name
            ours.setdefault(name, []).append(generate(specs[name]))
        ref = _reference(factory, seed)
        for name in expected:
            theirs.setdefault(name, []).append(ref[name])
    for name, (kind, value) in expected.items():
        a, b = np.stack(ours[name]), np.stack(theirs[name])
        assert a.shape == b.shape, name
        if kind == "constant":
            assert np.all(a == value) and np.all(b == value), name
            continue
        if kind == "uniform":
            assert np.abs(a).max() <= value and np.abs(b).max() <= value, name
        if name == "weight" and "padding_idx" in str(manifest.get("weight", {}).get("attributes", {})):
            assert np.all(a[:, 3] == 0) and np.all(b[:, 3] == 0)
            a, b = np.delete(a, 3, axis=1), np.delete(b, 3, axis=1)
        result = scipy_stats.ks_2samp(a.ravel(), b.ravel())
        assert result.pvalue > KS_ALPHA, (name, result)


# -- gpt2 against nanoGPT's own _init_weights (bench.recipes.GPT: nanoGPT's module tree and init) --


def test_manifest_buffers_only_when_asked() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert list(module_manifest(model)[0]) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert list(module_manifest(model, buffers=False)[0]) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert module_manifest(model)[0]["0.weight"] == {
        "shape": [4, 3, 3, 3],
        "dtype": "float32",
        "kind": "conv2d",
        "role": "weight",
        "attributes": {"groups": 1},
    }


def test_recipe_gpt2_matches_nanogpt() -> None:
    torch.manual_seed(0)
    reference = GPT(vocab=512, block=256, n_layer=4, n_embd=256)
    reference.nanogpt_init()
    model = GPT(vocab=512, block=256, n_layer=4, n_embd=256)
    manifest, _ = module_manifest(model)
    assert list(manifest) == [n for n, _ in model.named_parameters()]
    specs = {s.name: s for s in plan_recipe("gpt2", manifest, recipe_params={"n_layer": 4}, seed=0).specs}
    for name, param in reference.named_parameters():
        theirs = param.detach().numpy()
        ours = generate(specs[name])
        if name.endswith("bias"):
            assert np.all(ours == 0) and np.all(theirs == 0), name
        elif "ln_" in name:
            assert np.all(ours == 1) and np.all(theirs == 1), name
        else:
            assert abs(ours.std() / theirs.std() - 1) < 0.02, (name, ours.std(), theirs.std())
            assert abs(ours.mean()) < 4 * theirs.std() / math.sqrt(ours.size)


# -- the live service ---------------------------------------------------------------


def _small() -> nn.Module:
    return nn.Sequential(nn.Embedding(20, 8, padding_idx=0), nn.Linear(8, 16), nn.LayerNorm(16), nn.Conv1d(16, 4, 3), nn.LSTM(4, 6))


def test_init_module_recipe_fills_the_engine_bytes(live_url: str) -> None:
    model = _small()
    before = dict(model.named_parameters())
    with Client(live_url) as client:
        done = client.init_module(model, recipe="torch", seed=5)
    manifest, _ = module_manifest(_small())
    expected = {s.name: generate(s) for s in plan_recipe("torch", manifest, seed=5).specs}
    assert done == list(expected)
    for name, param in model.named_parameters():
        assert param is before[name]
        assert np.array_equal(param.detach().numpy(), expected[name]), name
    assert np.all(model.get_parameter("0.weight").detach().numpy()[0] == 0)


def test_init_module_gpt2_with_rules_and_roles_and_plan(live_url: str) -> None:
    model = GPT(vocab=64, block=16, n_layer=2, n_embd=16)
    head = model.get_parameter("transformer.h.0.mlp.c_fc.weight").detach().clone()
    with Client(live_url) as client:
        plan = client.plan_module(
            model,
            recipe="gpt2",
            recipe_params={"n_layer": 2},
            rules={"*.c_fc.weight": None},
            roles={"residual_out": ["*.attn.c_proj.weight"]},
        )
        done = client.init_module(
            model,
            recipe="gpt2",
            recipe_params={"n_layer": 2},
            rules={"*.c_fc.weight": None},
            roles={"residual_out": ["*.attn.c_proj.weight"]},
        )
        text = client._http.post(
            f"{live_url}/plan",
            json={"recipe": "gpt2", "recipe_params": {"n_layer": 2}, "tensors": {"a.weight": {"shape": [4, 4], "kind": "linear"}}},
            headers={"Accept": "text/plain"},
        )
    stds = {s["name"]: s["distribution"].get("std") for s in plan["specs"]}
    assert stds["transformer.h.0.attn.c_proj.weight"] == pytest.approx(0.01)  # 0.02/√(2·2)
    assert stds["transformer.h.0.mlp.c_proj.weight"] == pytest.approx(0.02)  # the roles override excludes it
    assert plan["skipped"] == ["transformer.h.0.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.weight"]
    assert "transformer.h.0.mlp.c_fc.weight" not in done
    assert torch.equal(model.get_parameter("transformer.h.0.mlp.c_fc.weight"), head)  # left alone
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "a.weight" in text.text and "N(0, 0.02²)" in text.text


@pytest.mark.anyio
async def test_async_init_module_and_plan(live_url: str) -> None:
    model, twin = _small(), _small()
    async with AsyncClient(live_url) as client:
        await client.init_module(model, recipe="keras", seed=1)
        plan = await client.plan_module(model, recipe="keras")
    with Client(live_url) as client:
        client.init_module(twin, recipe="keras", seed=1)
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    bias = {s["name"]: s for s in plan["specs"]}["4.bias_ih_l0"]
    assert bias["fill_rows"] == [[6, 12, 1.0]]  # Keras' unit_forget_bias on torch's gate order i, f, g, o
    assert np.all(twin.get_parameter("4.bias_ih_l0").detach().numpy()[6:12] == 1) and np.all(
        twin.get_parameter("4.bias_ih_l0").detach().numpy()[:6] == 0
    )


def test_init_tree_flax_params_without_jax(live_url: str) -> None:
    params: dict[str, Any] = {
        "Embed_0": {"embedding": np.zeros((100, 32), np.float32)},
        "Dense_0": {"kernel": (32, 64), "bias": (64,)},
        "LayerNorm_0": {"scale": (64,), "bias": (64,)},
        "free": np.ones(3, np.float32),
    }
    kinds = {"Embed_*": "embedding", "Dense_*": "linear", "LayerNorm_*": "layer_norm"}
    manifest = tree_manifest(params, kinds)
    assert manifest["Dense_0.kernel"] == {"shape": [32, 64], "dtype": "float32", "kind": "linear", "role": "weight"}
    assert "kind" not in manifest["free"]
    with Client(live_url) as client:
        out = client.init_tree(params, kinds, recipe="flax", rules={"free": None}, seed=2)
    assert out["free"] is params["free"]
    kernel = out["Dense_0"]["kernel"]
    assert kernel.shape == (32, 64) and np.abs(kernel).max() <= 2 / (
        0.87962566 * math.sqrt(32)
    )  # cut at ±2 of the pre-truncation std (jax: in = axis -2)
    assert abs(kernel.std() * math.sqrt(32) - 1) < 0.05
    assert out["Embed_0"]["embedding"].std() == pytest.approx(1 / math.sqrt(32), rel=0.05)
    assert np.all(out["LayerNorm_0"]["scale"] == 1) and np.all(out["Dense_0"]["bias"] == 0)


# -- errors over HTTP -------------------------------------------------------------------

ERRORS: list[tuple[dict[str, Any], type[Exception], list[str], str]] = [
    (
        {"recipe": "gpt2", "tensors": {"a.weight": {"shape": [4, 4], "kind": "linear"}}},
        ValidationError,
        ["recipe_params", "n_layer"],
        "≥ 1",
    ),
    (
        {"recipe": "torch", "tensors": {"a.weight": {"shape": [4, 4], "kind": "dense"}}},
        ValidationError,
        ["tensors", "a.weight", "kind"],
        "conv_transpose2d",
    ),
    (
        {"recipe": "torch", "tensors": {"a.w": {"shape": [4, 4], "kind": "linear", "role": "w"}}},
        ValidationError,
        ["tensors", "a.w", "role"],
        "weight, bias",
    ),
    ({"recipe": "torch", "tensors": {"a": {"shape": [4]}, "b": {"shape": [4]}}}, ValidationError, ["tensors", "a"], "rule"),
    ({"recipe": "nope", "tensors": {"a": {"shape": [4]}}}, ValidationError, ["recipe"], "gpt2"),
    ({"recipe": "torch", "roles": {"resid": ["*"]}, "tensors": {"a": {"shape": [4]}}}, ValidationError, ["roles", "resid"], "residual_out"),
    ({"recipe": "torch", "tensors": {f"t{i}": {"shape": [1]} for i in range(1025)}}, PayloadTooLarge, ["tensors"], "1024"),
]


@pytest.mark.parametrize(("body", "error", "path", "allowed"), ERRORS)
def test_recipe_errors(live_url: str, body: dict[str, Any], error: type[Exception], path: list[str], allowed: str) -> None:
    for endpoint in ("/init", "/plan"):
        with Client(live_url) as client:
            response = client._http.post(f"{live_url}{endpoint}", json=body)
        problem = response.json()
        assert response.status_code == (413 if error is PayloadTooLarge else 422), problem
        assert response.headers["content-type"] == "application/problem+json"
        assert any(e["path"] == path and allowed in (e.get("allowed") or "") for e in problem["errors"]), problem
    if body["recipe"] == "torch" and "kind" not in str(body) and "roles" not in body and len(body["tensors"]) == 2:
        assert [e["path"] for e in problem["errors"]] == [["tensors", "a"], ["tensors", "b"]]  # every uncovered name


def test_client_raises_the_mapped_error(live_url: str) -> None:
    with Client(live_url) as client, pytest.raises(ValidationError) as info:
        client.init_module(nn.Linear(2, 2), recipe="gpt2")
    assert any(e.path == ("recipe_params", "n_layer") for e in info.value.errors)


def test_catalogue_and_a_streamed_fill_rows(live_url: str) -> None:
    with Client(live_url) as client:
        catalogue = client._http.get(f"{live_url}/recipes").json()
        one = client._http.get(f"{live_url}/recipes/deepnet").json()
        missing = client._http.get(f"{live_url}/recipes/gpt3")
        # A zeros tensor over the streaming threshold with a row range set to 1 (Keras' forget
        # bias): the constant fast path must not serve it, the post-step must reach every block.
        hidden = 300_000
        body = {
            "recipe": "keras",
            "tensors": {"lstm.bias_ih_l0": {"shape": [4 * hidden], "kind": "lstm", "attributes": {"hidden_size": hidden}}},
        }
        served = client._fetch(body, "numpy", verify=True)["lstm.bias_ih_l0"]
    assert [r["name"] for r in catalogue["recipes"]] == [
        "torch",
        "keras",
        "flax",
        "gpt2",
        "fixup",
        "t_fixup",
        "deepnet",
        "mup",
        "transformers",
    ]
    assert "conv_transpose3d" in catalogue["kinds"] and "residual_out" in catalogue["roles"]
    assert one["formula"] and "torchscale" in one["source"] and any(p["name"] == "beta_source" for p in one["parameters"])
    assert missing.status_code == 404
    expected = np.zeros(4 * hidden, np.float32)
    expected[hidden : 2 * hidden] = 1
    assert np.array_equal(served, expected)
