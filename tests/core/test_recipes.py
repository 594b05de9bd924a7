"""Recipes in the engine: depth/width multipliers against hand-computed numbers, manifest checks, rules and roles, fill_rows.

The multipliers were computed by hand from the papers' formulas (and checked with a
calculator), not by calling the code under test.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service.core import ResolvedSpec, Tensor, generate, resolve
from service.core.errors import (
    InvalidParameterError,
    MissingParameterError,
    TensorinitError,
    UncoveredTensorsError,
    UnknownParameterError,
    UnknownRecipeError,
)
from service.core.recipes import RECIPES, deepnet_constants, fixup_multiplier, plan_recipe, t_fixup_multipliers
from service.core.slices import check_slice


def dist(spec: ResolvedSpec) -> Any:
    """The distribution, untyped: each test knows which kind it holds."""
    return spec.distribution


# -- the multipliers, hand-computed ---------------------------------------------------

# (N, M, beta_source) -> expected constants
DEEPNET = [
    ((6, 0, "paper"), {"encoder_beta": 0.379918, "encoder_alpha": 1.861210}),  # (48)^(-1/4), (12)^(1/4)
    ((0, 12, "paper"), {"decoder_beta": 0.319472, "decoder_alpha": 2.213364}),  # (96)^(-1/4), (24)^(1/4)
    ((6, 6, "paper"), {"encoder_beta": 0.496989, "encoder_alpha": 1.417938, "decoder_beta": 0.343295, "decoder_alpha": 2.059767}),
    ((6, 6, "torchscale"), {"encoder_beta": 0.656940, "decoder_beta": 0.343295}),  # 1.15 / 7776^(1/16)
    ((100, 10, "paper"), {"encoder_beta": 0.238243, "decoder_beta": 0.302138}),
]


@pytest.mark.parametrize(("depths", "expected"), DEEPNET)
def test_deepnet_constants(depths: tuple[int, int, str], expected: dict[str, float]) -> None:
    got = deepnet_constants(*depths)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=2e-6), key


# (N, M) -> encoder, decoder, embedding multipliers
T_FIXUP = [
    ((6, 6), {"encoder": 0.428092, "decoder": 0.368894, "embedding": 0.368894}),  # 0.67·6^(-1/4), 54^(-1/4)
    ((12, 0), {"encoder": 0.359981, "embedding": 0.310202}),  # 0.67·12^(-1/4), (108)^(-1/4)
    ((0, 24), {"decoder": 0.260847, "embedding": 0.260847}),  # 216^(-1/4): √216 = 14.6969, √14.6969 = 3.83366
]


@pytest.mark.parametrize(("depths", "expected"), T_FIXUP)
def test_t_fixup_multipliers(depths: tuple[int, int], expected: dict[str, float]) -> None:
    got = t_fixup_multipliers(*depths)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=2e-6), key


@pytest.mark.parametrize(("num_layers", "m", "expected"), [(8, 2, 0.353553), (16, 3, 0.5), (50, 2, 0.141421), (81, 3, 1 / 3)])
def test_fixup_multiplier(num_layers: int, m: int, expected: float) -> None:
    assert fixup_multiplier(num_layers, m) == pytest.approx(expected, abs=2e-6)


# -- recipes end to end: the resolved numbers ------------------------------------------

ENC_DEC = {
    "embed.weight": {"shape": [1000, 64], "kind": "embedding"},
    "encoder.layers.0.self_attn.q_proj.weight": {"shape": [64, 64], "kind": "linear"},
    "encoder.layers.0.self_attn.v_proj.weight": {"shape": [64, 64], "kind": "linear"},
    "encoder.layers.0.self_attn.out_proj.weight": {"shape": [64, 64], "kind": "linear"},
    "encoder.layers.0.fc1.weight": {"shape": [256, 64], "kind": "linear"},
    "encoder.layers.0.fc1.bias": {"shape": [256], "kind": "linear"},
    "decoder.layers.0.fc2.weight": {"shape": [64, 256], "kind": "linear"},
    "decoder.layers.0.self_attn.k_proj.weight": {"shape": [64, 64], "kind": "linear"},
    "decoder.layers.0.final_layer_norm.weight": {"shape": [64], "kind": "layer_norm"},
}


def _by_name(recipe: str, tensors: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {s.name: s for s in plan_recipe(recipe, tensors, **kw).specs}


def _glorot_std(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


# (recipe, params, tensor, expected distribution kind, expected std or bound)
RESOLVED = [
    ("deepnet", {"encoder_layers": 6, "decoder_layers": 6}, "encoder.layers.0.fc1.weight", "normal", 0.496989 * _glorot_std(64, 256)),
    (
        "deepnet",
        {"encoder_layers": 6, "decoder_layers": 6},
        "encoder.layers.0.self_attn.v_proj.weight",
        "normal",
        0.496989 * _glorot_std(64, 64),
    ),
    ("deepnet", {"encoder_layers": 6, "decoder_layers": 6}, "encoder.layers.0.self_attn.q_proj.weight", "normal", _glorot_std(64, 64)),
    ("deepnet", {"encoder_layers": 6, "decoder_layers": 6}, "decoder.layers.0.fc2.weight", "normal", 0.343295 * _glorot_std(256, 64)),
    ("deepnet", {"encoder_layers": 6, "decoder_layers": 6}, "decoder.layers.0.self_attn.k_proj.weight", "normal", _glorot_std(64, 64)),
    ("deepnet", {"encoder_layers": 6, "decoder_layers": 6}, "embed.weight", "normal", 0.125),  # 64^(-1/2)
    (
        "t_fixup",
        {"encoder_layers": 6, "decoder_layers": 6},
        "encoder.layers.0.self_attn.out_proj.weight",
        "uniform",
        0.428092 * math.sqrt(6 / 128),
    ),
    ("t_fixup", {"encoder_layers": 6, "decoder_layers": 6}, "decoder.layers.0.fc2.weight", "uniform", 0.368894 * math.sqrt(6 / 320)),
    ("t_fixup", {"encoder_layers": 6, "decoder_layers": 6}, "encoder.layers.0.self_attn.q_proj.weight", "uniform", math.sqrt(6 / 128)),
    ("t_fixup", {"encoder_layers": 6, "decoder_layers": 6}, "embed.weight", "normal", 0.125 * 0.368894),
    ("gpt2", {"n_layer": 12}, "encoder.layers.0.fc1.weight", "normal", 0.02),
    ("gpt2", {"n_layer": 12}, "decoder.layers.0.fc2.weight", "normal", 0.02 / math.sqrt(24)),  # fc2 is a residual output
]


@pytest.mark.parametrize(("recipe", "params", "name", "kind", "value"), RESOLVED)
def test_recipe_numbers(recipe: str, params: dict[str, Any], name: str, kind: str, value: float) -> None:
    spec = _by_name(recipe, ENC_DEC, recipe_params=params)[name]
    found = dist(spec)
    assert found.kind == kind
    got = found.std if kind == "normal" else found.high
    assert got == pytest.approx(value, rel=1e-5)
    assert dict(spec.derivation)["recipe"] == recipe


def test_recipes_zero_biases_and_unit_norms() -> None:
    for name in ("deepnet", "t_fixup", "gpt2"):
        params = {"n_layer": 2} if name == "gpt2" else {"encoder_layers": 6, "decoder_layers": 6}
        specs = _by_name(name, ENC_DEC, recipe_params=params)
        assert dist(specs["encoder.layers.0.fc1.bias"]).value == 0.0
        assert dist(specs["decoder.layers.0.final_layer_norm.weight"]).value == 1.0


MUP_TENSORS = {
    "wte.weight": {"shape": [500, 256], "kind": "embedding"},
    "h.0.fc.weight": {"shape": [1024, 256], "kind": "linear"},
    "h.0.fc.bias": {"shape": [1024], "kind": "linear"},
    "lm_head.weight": {"shape": [500, 256], "kind": "linear"},
}

# (width_mult, std, readout) -> hidden std, readout std (None: zeros), embedding std
MUP = [
    (4.0, 0.02, "fold", 0.01, 0.005, 0.02),
    (1.0, 0.02, "fold", 0.02, 0.02, 0.02),  # the base model is unchanged
    (16.0, 0.04, "unscaled", 0.01, 0.04, 0.04),
    (2.0, 0.02, "zero", 0.0141421, None, 0.02),
]


@pytest.mark.parametrize(("width_mult", "std", "readout", "hidden", "head", "embedding"), MUP)
def test_mup(width_mult: float, std: float, readout: str, hidden: float, head: float | None, embedding: float) -> None:
    specs = _by_name("mup", MUP_TENSORS, recipe_params={"width_mult": width_mult, "std": std, "readout": readout})
    assert dist(specs["h.0.fc.weight"]).std == pytest.approx(hidden, rel=1e-5)
    assert dist(specs["wte.weight"]).std == pytest.approx(embedding, rel=1e-5)
    assert dist(specs["h.0.fc.bias"]).value == 0.0
    if head is None:
        assert dist(specs["lm_head.weight"]).value == 0.0
    else:
        assert dist(specs["lm_head.weight"]).std == pytest.approx(head, rel=1e-5)


def test_mup_base_shapes() -> None:
    # base (64, 64) → (256, 128): both dims infinite, width_mult of the fan_in dimension 128/64 = 2.
    tensors = {"h.fc.weight": {"shape": [256, 128], "kind": "linear", "attributes": {"base_shape": [64, 64]}}}
    spec = plan_recipe("mup", tensors).specs[0]
    assert dist(spec).std == pytest.approx(0.02 / math.sqrt(2), rel=1e-9)
    # Only the output dimension grew: vector-like, std unchanged.
    tensors = {"h.fc.weight": {"shape": [256, 64], "kind": "linear", "attributes": {"base_shape": [64, 64]}}}
    assert dist(plan_recipe("mup", tensors).specs[0]).std == pytest.approx(0.02)


FIXUP_TENSORS = {
    "conv1.weight": {"shape": [64, 3, 7, 7], "kind": "conv2d"},
    "layer1.0.conv1.weight": {"shape": [64, 64, 3, 3], "kind": "conv2d"},
    "layer1.0.conv2.weight": {"shape": [64, 64, 3, 3], "kind": "conv2d"},
    "layer1.0.downsample.weight": {"shape": [64, 64, 1, 1], "kind": "conv2d"},
    "fc.weight": {"shape": [10, 64], "kind": "linear"},
    "fc.bias": {"shape": [10], "kind": "linear"},
}


def test_fixup() -> None:
    specs = _by_name("fixup", FIXUP_TENSORS, recipe_params={"num_layers": 8})
    # fan_out of the branch conv: 64·9 = 576; std √(2/576)·8^(-1/2)
    assert dist(specs["layer1.0.conv1.weight"]).std == pytest.approx(math.sqrt(2 / 576) * 0.353553, rel=1e-5)
    assert dist(specs["layer1.0.conv2.weight"]).value == 0.0
    assert dist(specs["fc.weight"]).value == 0.0
    assert dist(specs["fc.bias"]).value == 0.0
    assert dist(specs["conv1.weight"]).std == pytest.approx(math.sqrt(2 / (64 * 49)), rel=1e-9)  # the stem: He fan_out
    assert dist(specs["layer1.0.downsample.weight"]).std == pytest.approx(math.sqrt(2 / 64), rel=1e-9)


# -- errors, rules and roles ----------------------------------------------------------

GPT = {
    "wte.weight": {"shape": [100, 16], "kind": "embedding"},
    "h.0.attn.c_proj.weight": {"shape": [16, 16], "kind": "linear"},
    "h.0.attn.c_proj.bias": {"shape": [16], "kind": "linear"},
    "ln_f.weight": {"shape": [16], "kind": "layer_norm"},
}

ERRORS: list[tuple[str, dict[str, Any], dict[str, Any], type[TensorinitError], str, tuple[str, ...]]] = [
    ("gpt2", GPT, {}, MissingParameterError, "n_layer", ("recipe_params",)),
    ("gpt2", GPT, {"n_layer": 0}, InvalidParameterError, "n_layer", ("recipe_params",)),
    ("gpt2", GPT, {"n_layer": 2, "depth": 3}, UnknownParameterError, "depth", ("recipe_params",)),
    (
        "gpt2",
        {**GPT, "x.weight": {"shape": [3, 3], "kind": "dense"}},
        {"n_layer": 2},
        InvalidParameterError,
        "kind",
        ("tensors", "x.weight"),
    ),
    ("torch", {"x.gamma": {"shape": [3], "kind": "layer_norm"}}, {}, MissingParameterError, "role", ("tensors", "x.gamma")),
    ("torch", {"x": {"shape": [3], "kind": "layer_norm", "role": "gamma"}}, {}, InvalidParameterError, "role", ("tensors", "x")),
    (
        "torch",
        {"r.weight_hh_l0": {"shape": [8, 2], "kind": "rnn"}},
        {},
        MissingParameterError,
        "hidden_size",
        ("tensors", "r.weight_hh_l0", "attributes"),
    ),
    (
        "torch",
        {"e.weight": {"shape": [4, 2], "kind": "embedding", "attributes": {"padding_idx": 4}}},
        {},
        InvalidParameterError,
        "padding_idx",
        ("tensors", "e.weight", "attributes"),
    ),
    (
        "torch",
        {"e.weight": {"shape": [4, 2], "kind": "embedding", "attributes": {"colour": 4}}},
        {},
        UnknownParameterError,
        "colour",
        ("tensors", "e.weight", "attributes"),
    ),
    ("deepnet", GPT, {}, MissingParameterError, "encoder_layers", ("recipe_params",)),
    (
        "deepnet",
        {"a.in_proj_weight": {"shape": [48, 16], "kind": "multihead_attention"}},
        {"decoder_layers": 2},
        InvalidParameterError,
        "role",
        ("tensors", "a.in_proj_weight"),
    ),
    ("mup", {"h.w.weight": {"shape": [8, 8], "kind": "linear"}}, {}, MissingParameterError, "width_mult", ("recipe_params",)),
]


@pytest.mark.parametrize(("recipe", "tensors", "params", "error", "param", "where"), ERRORS)
def test_errors_name_the_parameter(
    recipe: str, tensors: dict[str, Any], params: dict[str, Any], error: type[TensorinitError], param: str, where: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        plan_recipe(recipe, tensors, recipe_params=params)
    assert info.value.param == param
    assert getattr(info.value, "where", ()) == where
    assert info.value.allowed


def test_integral_numbers_are_integers() -> None:
    assert (
        plan_recipe("gpt2", GPT, recipe_params={"n_layer": 8.0}).specs[1].distribution
        == plan_recipe("gpt2", GPT, recipe_params={"n_layer": 8}).specs[1].distribution
    )
    with pytest.raises(InvalidParameterError):
        plan_recipe("gpt2", GPT, recipe_params={"n_layer": 8.5})


def test_unknown_kind_lists_the_vocabulary() -> None:
    with pytest.raises(InvalidParameterError) as info:
        plan_recipe("torch", {"x.weight": {"shape": [3, 3], "kind": "dense"}})
    assert "conv_transpose2d" in info.value.allowed and "multihead_attention" in info.value.allowed


def test_unknown_recipe() -> None:
    with pytest.raises(UnknownRecipeError) as info:
        plan_recipe("gpt3", GPT)
    assert all(name in info.value.allowed for name in RECIPES)


def test_uncovered_names_every_tensor() -> None:
    tensors = {**GPT, "free": {"shape": [4]}, "r.weight_ih_l0": {"shape": [8, 4], "kind": "lstm", "attributes": {"hidden_size": 2}}}
    with pytest.raises(UncoveredTensorsError) as info:
        plan_recipe("gpt2", tensors, recipe_params={"n_layer": 2})
    assert info.value.names == ["free", "r.weight_ih_l0"]
    # A rule covers them; a null rule leaves one out.
    plan = plan_recipe("gpt2", tensors, recipe_params={"n_layer": 2}, rules=[["free", "ones"], ["r.*", None]])
    assert [s.name for s in plan.specs] == [*GPT, "free"] and plan.skipped == ["r.weight_ih_l0"]


def test_rules_win_over_the_recipe_and_roles_override() -> None:
    rules = {"h.*.c_proj.weight": {"scheme": "normal", "std": 0.5}}
    spec = _by_name("gpt2", GPT, recipe_params={"n_layer": 2}, rules=rules)["h.0.attn.c_proj.weight"]
    assert dist(spec).std == 0.5
    hand = resolve("normal", (16, 16), name="h.0.attn.c_proj.weight", params={"std": 0.5})
    assert dist(spec) == hand.distribution and np.array_equal(generate(spec), generate(hand))
    # residual_out replaced by a list that does not match: the projection is a plain weight.
    plain = _by_name("gpt2", GPT, recipe_params={"n_layer": 2}, roles={"residual_out": ["*.mlp.c_proj.weight"]})
    assert dist(plain["h.0.attn.c_proj.weight"]).std == 0.02
    with pytest.raises(UnknownParameterError) as info:
        plan_recipe("gpt2", GPT, recipe_params={"n_layer": 2}, roles={"residual": ["*"]})
    assert "residual_out" in info.value.allowed


def test_recipe_spec_equals_the_hand_written_request() -> None:
    """A recipe's tensor has the bytes of the same scheme request: the recipe only chooses the numbers."""
    spec = _by_name("gpt2", GPT, recipe_params={"n_layer": 2}, seed=7)["wte.weight"]
    hand = resolve("normal", (100, 16), name="wte.weight", seed=7, params={"std": 0.02})
    assert np.array_equal(generate(spec), generate(hand))


# -- fill_rows: the padding row as part of the spec ------------------------------------


def test_padding_row_is_zero_and_the_rest_unchanged() -> None:
    tensors = {"emb.weight": {"shape": [300000, 3], "kind": "embedding", "attributes": {"padding_idx": -2}}}
    spec = plan_recipe("torch", tensors, seed=3).specs[0]
    assert spec.fill_rows == ((299998, 299999, 0.0),)
    assert spec.to_dict()["fill_rows"] == [[299998, 299999, 0.0]]
    out = generate(spec)  # 900000 elements: several blocks, the row far from block 0
    plain = generate(resolve("normal", (300000, 3), name="emb.weight", seed=3, params={"std": 1.0}))
    assert np.all(out[299998] == 0)
    keep = np.ones(300000, bool)
    keep[299998] = False
    assert np.array_equal(out[keep], plain[keep])
    # A slice of the tensor is that slice of the whole (the post-step honours slices too).
    part = replace(spec, slice=check_slice("299990:300000,1:", spec.shape))
    assert np.array_equal(Tensor(part).array(), out[299990:300000, 1:])


def test_specs_without_fill_rows_keep_their_canonical_json() -> None:
    spec = resolve("normal", (4, 4))
    assert "fill_rows" not in spec.to_dict()


def test_names_equal_after_nfc_are_refused() -> None:
    tensors = {"e\u0301.weight": {"shape": [2, 2], "kind": "linear"}, "\u00e9.weight": {"shape": [2, 2], "kind": "linear"}}
    with pytest.raises(InvalidParameterError) as info:
        plan_recipe("torch", tensors)
    assert "NFC" in info.value.allowed and getattr(info.value, "where", ()) == ("tensors",)
