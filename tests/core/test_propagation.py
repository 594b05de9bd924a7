"""Signal propagation: the mean-field recursion against closed forms and quadrature, against a real pass, and known results."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

import numpy as np
import pytest
import scipy.integrate

from service.core import (
    InvalidParameterError,
    LimitExceededError,
    Limits,
    TensorinitError,
    UnknownSchemeError,
    default_executor,
    generate,
    resolve,
)
from service.core.propagation import (
    ACTIVATIONS,
    Activation,
    PropagationLimits,
    build_network,
    build_networks,
    fixed_point,
    measure,
    propagate,
    theory,
    verdict,
)
from service.core.recipes import plan_recipe


def _net(**fields: Any) -> Any:
    return build_network({"depth": 20, "width": 64, "activation": "relu", "init": "he_normal", "batch": 8, **fields})


# -- expectations: closed forms and quadrature against adaptive integration ----------------

ACTS = [Activation(name) for name in ACTIVATIONS] + [Activation("leaky_relu", slope=0.2), Activation("elu", alpha=0.5)]


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"{a.name}-{a.slope}-{a.alpha}")
@pytest.mark.parametrize("q", [1e-4, 0.3, 1.0, 4.0, 50.0])
def test_moments_match_adaptive_integration(act: Activation, q: float) -> None:
    s = math.sqrt(q)

    def density(z: float) -> float:
        return math.exp(-z * z / (2 * q)) / math.sqrt(2 * math.pi * q)

    def expect(f: Callable[[float], float]) -> float:
        # split at the kink: quad integrates each smooth half to full precision
        halves = ((-12 * s, 0.0), (0.0, 12 * s))
        return float(sum(scipy.integrate.quad(lambda z: f(z) * density(z), a, b, epsabs=1e-13, epsrel=1e-11)[0] for a, b in halves))

    def phi(z: float) -> float:
        return float(act.phi(np.array([z]))[0])

    def dphi(z: float) -> float:
        return float(act.dphi(np.array([z]))[0])

    mean, square, slope = act.moments(q)
    assert mean == pytest.approx(expect(phi), rel=1e-7, abs=1e-12)
    assert square == pytest.approx(expect(lambda z: phi(z) ** 2), rel=1e-7, abs=1e-14)
    assert slope == pytest.approx(expect(lambda z: dphi(z) ** 2), rel=1e-7, abs=1e-12)


def test_relu_recursion_is_q_times_sigma_w2_over_two() -> None:
    # N(0, std²) with std² = 3/fan_in: σ_w² = 3, so q_1 = 3·v_0 and q_l = q_{l−1}·3/2.
    net = _net(width=100, init={"scheme": "normal", "std": math.sqrt(3 / 100)}, input_variance=0.7)
    th = theory(net)
    assert th.forward[0] == pytest.approx(3 * 0.7, rel=1e-12)
    for prev, cur in zip(th.forward, th.forward[1:], strict=False):
        assert cur == pytest.approx(prev * 3 / 2, rel=1e-12)
    # backward: D_L = E[φ′²] = 1/2, then ×(fan_out·E[W²]·1/2) = ×3/2 per layer towards the input
    assert th.backward[-1] == pytest.approx(0.5, rel=1e-12)
    for earlier, later in zip(th.backward, th.backward[1:], strict=False):
        assert earlier == pytest.approx(later * 3 / 2, rel=1e-12)


def test_linear_recursion_and_bias() -> None:
    net = _net(width=50, activation="linear", init={"scheme": "normal", "std": 0.1}, bias={"scheme": "constant", "value": 0.2}, depth=5)
    th = theory(net)
    q = 1.0
    for got in th.forward:
        q = 50 * 0.01 * q + 0.04  # σ_w² = 50·0.01 = 0.5, σ_b² = 0.2²
        assert got == pytest.approx(q, rel=1e-12)


def test_tanh_near_zero_follows_its_taylor_series() -> None:
    # tanh(z)² = z² − (2/3)z⁴ + (17/45)z⁶ − …, E[z⁴] = 3q², E[z⁶] = 15q³: E[tanh²] = q − 2q² + (17/3)q³ − …
    for q in (1e-3, 1e-2):
        _, square, slope = Activation("tanh").moments(q)
        assert abs(square - (q - 2 * q * q)) <= 6 * q**3
        # (1 − tanh²)² = sech⁴ = (1 − z² + (2/3)z⁴ − …)² = 1 − 2z² + (7/3)z⁴ − …: E = 1 − 2q + 7q² − O(q³)
        assert abs(slope - (1 - 2 * q + 7 * q * q)) <= 60 * q**3


def test_conv_fans_and_keras_layout_give_the_same_theory() -> None:
    common = {"layers": [{"width": 8, "kernel": [3]}] * 3, "input_width": 4, "spatial": [9], "activation": "tanh", "init": "glorot_normal"}
    torch_net = build_network({**common, "convention": "torch"})
    keras_net = build_network({**common, "convention": "keras"})
    assert torch_net.layers[0].fan_in == 12
    assert torch_net.layers[1].fan_in == 24
    assert torch_net.layers[1].fan_out == 24
    assert theory(torch_net).forward == pytest.approx(theory(keras_net).forward, rel=1e-12)


# -- measurement: the served bytes, and agreement with theory --------------------------------


def test_measurement_uses_the_served_tensors() -> None:
    # The weights are /init's for the same scheme, name and seed; a network that only reads them as a
    # matrix gives h_1 = x_0 @ W_0ᵀ exactly, so its measured E[h_1²] is that of the served W_0.
    net = build_network({"depth": 1, "width": 32, "activation": "linear", "init": "he_normal", "seed": 5, "batch": 4096})
    served = generate(resolve("he_normal", (32, 32), name="layers.0.weight", seed=5))
    spec = net.layers[0].weight
    assert (generate(spec) == served).all()
    measured = measure(net).forward[0]
    expected = float(np.sum(served.astype(np.float64) ** 2)) / 32  # E[h²] = ‖W‖²_F/out for unit-variance x
    assert measured == pytest.approx(expected, rel=0.05)


def test_a_pass_runs_blas_on_one_thread() -> None:
    # OpenBLAS's own threads spin on the engine's pool threads' cores (docs/benchmarks.md): a pass pins them.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    measure(_net(depth=1))
    blas = threadpoolctl.threadpool_info()
    assert blas and all(lib["num_threads"] == 1 for lib in blas if lib["user_api"] == "blas")


def test_weights_made_ahead_give_the_pass_of_weights_made_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    # Elementwise weights are made on the inner pool one layer ahead; orthogonal ones in turn.
    from service.core.propagation import measurement as propagation

    layers = [{"width": 96, "init": init} for init in ("he_normal", "orthogonal", "he_uniform", "orthogonal", "lecun_normal")]
    net = build_network({"layers": layers, "input_width": 64, "activation": "tanh", "batch": 32, "seed": 3})
    ahead = measure(net)

    def in_turn(layers: Any) -> Any:
        for layer in layers:
            yield propagation._weight_matrix(layer)

    monkeypatch.setattr(propagation, "_weights", in_turn)
    assert measure(net) == ahead


def test_passes_in_every_block_worker_at_once_cannot_deadlock() -> None:
    # The route runs one pass per compared network on the block pool; 1024² weights have four chunks each.
    pool = default_executor()
    nets = [
        build_network({"depth": 2, "width": 1024, "activation": "relu", "init": "he_normal", "batch": 2, "seed": i})
        for i in range(3 * (pool._max_workers or 2))
    ]
    futures = [pool.submit(measure, net) for net in nets]
    _, pending = wait(futures, timeout=120)
    assert not pending
    assert all(f.result().forward[0] > 0 for f in futures)


CONTRACTING = [(act, scheme) for act in ("tanh", "selu") for scheme in ("he_normal", "glorot_normal", "lecun_normal", "orthogonal")]


@pytest.mark.slow
@pytest.mark.parametrize(("act", "scheme"), [c for c in CONTRACTING if c != ("selu", "he_normal")])
def test_theory_matches_measurement_within_ten_percent(act: str, scheme: str) -> None:
    net = build_network({"depth": 20, "width": 512, "activation": act, "init": scheme, "seed": 0, "batch": 512})
    result = propagate(net)
    assert result.measurement is not None
    for name, th, got in (
        ("forward", result.theory.forward, result.measurement.forward),
        ("backward", result.theory.backward, result.measurement.backward),
    ):
        ratio = np.array(got) / np.array(th)
        assert np.all(np.abs(ratio - 1) < 0.10), f"{name}: measured/theory per layer {np.round(ratio, 3)}"


MARGINAL = [(act, scheme) for scheme in ("he_normal", "glorot_normal", "lecun_normal", "orthogonal") for act in ("relu",)] + [
    ("selu", "he_normal")
]


@pytest.mark.slow
@pytest.mark.parametrize(("act", "scheme"), MARGINAL)
def test_theory_matches_measurement_within_finite_width_fluctuation(act: str, scheme: str) -> None:
    """ReLU stacks (and SELU at σ_w² = 2, ReLU-like there) do not contract: their log variance is a random walk.

    At width n each layer multiplies E[h²] of one sample by a factor of relative variance
    E[relu⁴]/E[relu²]² − 1 = 5 over n (Hanin & Rolnick, NeurIPS 2018), and deep ReLU layers
    align the batch, so the batch average does not average it away: after l layers the
    measured log ratio has std up to √(5l/n) ≈ 0.44 at l = 20, n = 512, and no single draw
    can promise 10% there. Asserted: the forward log ratio within 3 such σ, the backward
    (whose masks average over the batch) within 25%, and the per-layer backward factor within 10%.
    """
    net = build_network({"depth": 20, "width": 512, "activation": act, "init": scheme, "seed": 0, "batch": 512})
    result = propagate(net)
    assert result.measurement is not None
    log_ratio = np.log(np.array(result.measurement.forward) / np.array(result.theory.forward))
    sigma = np.sqrt(5 * np.arange(1, 21) / 512)
    assert np.all(np.abs(log_ratio) < 3 * sigma + 0.02), np.round(log_ratio, 3)
    back = np.array(result.measurement.backward) / np.array(result.theory.backward)
    assert np.all(np.abs(back - 1) < 0.25), np.round(back, 3)
    factor = (back[:-1] / back[1:]) - 1
    assert np.all(np.abs(factor) < 0.10), np.round(factor, 3)


def test_residual_with_layer_norm_matches_measurement() -> None:
    net = build_network(
        {
            "depth": 12,
            "width": 256,
            "activation": "relu",
            "init": "he_normal",
            "residual": {"multiplier": 0.5, "norm": "layer"},
            "batch": 256,
        }
    )
    result = propagate(net)
    assert result.measurement is not None
    for th, got in ((result.theory.forward, result.measurement.forward), (result.theory.backward, result.measurement.backward)):
        assert np.all(np.abs(np.array(got) / np.array(th) - 1) < 0.10)


def test_conv_measurement_matches_theory() -> None:
    net = build_network(
        {
            "layers": [{"width": 32, "kernel": [3, 3]}] * 6,
            "input_width": 16,
            "spatial": [8, 8],
            "activation": "tanh",
            "init": "he_normal",
            "batch": 64,
        }
    )
    result = propagate(net)
    assert result.measurement is not None
    for th, got in ((result.theory.forward, result.measurement.forward), (result.theory.backward, result.measurement.backward)):
        assert np.all(np.abs(np.array(got) / np.array(th) - 1) < 0.10)


def test_deep_vanishing_stack_does_not_underflow() -> None:
    # 2^−300 is below float32's range: the rescaled matmuls must still measure it.
    net = build_network({"depth": 300, "width": 64, "activation": "relu", "init": "glorot_normal", "batch": 64})
    result = propagate(net)
    assert result.measurement is not None
    assert result.theory.forward[-1] == pytest.approx(2.0**-299, rel=1e-9)
    # At width n the log of one draw drifts by −5L/(2n) with std √(5L/n) (Hanin & Rolnick 2018): ≈ −11.7 ± 4.8 in ln here.
    drift, sigma = 5 * 300 / (2 * 64), math.sqrt(5 * 300 / 64)
    got = math.log(result.measurement.forward[-1])
    assert abs(got - (math.log(result.theory.forward[-1]) - drift)) < 4 * sigma


# -- known results --------------------------------------------------------------------------

KNOWN = [
    # activation, init, depth: verdict, per-layer gradient factor, fixed point q*
    ("relu", "he_normal", 20, "stable", 1.0, None),
    ("relu", "glorot_normal", 20, "vanishing", 0.5, 0.0),
    ("relu", "glorot_uniform", 30, "vanishing", 0.5, 0.0),
    ("linear", "lecun_normal", 20, "stable", 1.0, None),
    ("selu", "lecun_normal", 20, "exploding", None, 1.0),
    ("tanh", "orthogonal", 20, "vanishing", None, 0.0),
    ("tanh", "he_normal", 20, "exploding", None, None),
]


@pytest.mark.parametrize(("act", "init", "depth", "kind", "factor", "q_star"), KNOWN)
def test_known_results(act: str, init: str, depth: int, kind: str, factor: float | None, q_star: float | None) -> None:
    net = build_network({"depth": depth, "width": 256, "activation": act, "init": init})
    v = verdict(net, theory(net))
    assert v["verdict"] == kind
    if factor is not None:
        assert v["gradient_factor_per_layer"] == pytest.approx(factor, rel=1e-9)
    if q_star is not None:
        assert v["fixed_point"] is not None
        assert v["fixed_point"]["q"] == pytest.approx(q_star, abs=1e-9)


def test_glorot_relu_vanishes_as_two_to_the_minus_depth() -> None:
    for depth in (5, 20, 60):
        net = build_network({"depth": depth, "width": 128, "activation": "relu", "init": "glorot_normal"})
        th = theory(net)
        assert th.forward[-1] / th.forward[0] == pytest.approx(2.0 ** -(depth - 1), rel=1e-9)
        assert th.input_gradient == pytest.approx(2.0**-depth, rel=1e-9)
        assert verdict(net, th)["gain_for_unit_chi"] == pytest.approx(math.sqrt(2), rel=1e-9)  # torch's calculate_gain('relu')


def test_selu_lecun_fixed_point_is_one_from_any_input_variance() -> None:
    for v0 in (0.25, 1.0, 4.0):
        net = build_network({"depth": 60, "width": 128, "activation": "selu", "init": "lecun_normal", "input_variance": v0})
        th = theory(net)
        assert th.forward[-1] == pytest.approx(1.0, abs=1e-6)
        assert th.output[-1] == pytest.approx(1.0, abs=1e-6)  # E[selu²] = 1 at q = 1 (Klambauer et al. 2017)
        fp = fixed_point(net)
        assert fp == {"q": pytest.approx(1.0, abs=1e-9), "attracting": True}


def test_tanh_at_unit_sigma_w2_decays_slowly_as_one_over_2l() -> None:
    net = build_network({"depth": 1000, "width": 128, "activation": "tanh", "init": "lecun_normal"})
    th = theory(net)
    v = verdict(net, th)
    assert v["verdict"] == "vanishing"
    assert 0.99 < v["forward_factor_per_layer"] < 1.0  # slowly: not geometric
    for depth in (100, 400, 1000):
        assert th.forward[depth - 1] * 2 * depth == pytest.approx(1.0, rel=0.05)  # q_l ≈ 1/(2l)


def test_gain_for_unit_chi_makes_the_gradient_stable() -> None:
    net = build_network({"depth": 20, "width": 128, "activation": "tanh", "init": "glorot_normal"})
    gain = verdict(net, theory(net))["gain_for_unit_chi"]
    assert gain is not None
    assert theory(net, gain).log_input_gradient == pytest.approx(0.0, abs=1e-4)


# -- validation ---------------------------------------------------------------------------------

BAD = [
    ({"depth": 0, "width": 8, "init": "he_normal"}, InvalidParameterError, "depth"),
    ({"depth": 2, "width": 8.5, "init": "he_normal"}, InvalidParameterError, "width"),
    ({"depth": 2, "width": 8, "init": "he_normal", "activation": "swish"}, InvalidParameterError, "layers[0].activation"),
    (
        {"depth": 2, "width": 8, "init": "he_normal", "activation": {"name": "relu", "slope": 0.1}},
        InvalidParameterError,
        "layers[0].activation",
    ),
    ({"depth": 2, "width": 8}, InvalidParameterError, "layers[0].init"),
    ({"depth": 2, "width": 8, "init": {"scheme": "he_normal", "shape": [2, 2]}}, InvalidParameterError, "layers[0].init.shape"),
    ({"depth": 2, "width": 8, "init": {"scheme": "he_normal", "gain": -1}}, TensorinitError, "layers[0].init.gain"),
    ({"depth": 2, "width": 8, "init": "he_nromal"}, TensorinitError, "layers[0].init.scheme"),
    ({"layers": [{"width": 8}, {"width": 4, "residual": {}}], "init": "he_normal"}, InvalidParameterError, "layers[1].width"),
    ({"layers": [{"width": 8, "kernel": [2]}], "spatial": [8], "init": "he_normal"}, InvalidParameterError, "layers[0].kernel"),
    ({"layers": [{"width": 8}], "spatial": [8], "init": "he_normal"}, InvalidParameterError, "layers[0].kernel"),
    ({"depth": 2, "width": 8, "init": "he_normal", "input_variance": 0}, InvalidParameterError, "input_variance"),
    ({"depth": 2, "width": 8, "init": "he_normal", "seed": -1}, InvalidParameterError, "seed"),
    ({"depth": 2, "width": 8, "init": "he_normal", "dtype": "int8"}, InvalidParameterError, "dtype"),
    ({"depth": 2, "width": 8, "init": "he_normal", "convention": "mxnet"}, InvalidParameterError, "convention"),
    ({"depth": 1001, "width": 8, "init": "he_normal"}, LimitExceededError, "depth"),
    # wrong before too large: every layer's form is checked before the depth limit, past it too
    (
        {"layers": [{"width": 4}] * 1000 + [{"width": 4, "activation": "swish"}], "init": "he_normal"},
        InvalidParameterError,
        "layers[1000].activation",
    ),
    ({"depth": 5000, "width": 8, "init": {"scheme": "he_normal", "gain": "big"}}, TensorinitError, "layers[0].init.gain"),
    ({"layers": [{"width": 4}] * 1001, "init": "he_normal"}, LimitExceededError, "layers"),
    ({"depth": 2, "width": 2048, "batch": 1024, "init": "he_normal"}, LimitExceededError, "batch"),
    ({"depth": 2, "width": 8, "init": {"recipe": "gpt3"}}, TensorinitError, "layers[0].init.recipe"),
    ({"depth": 2, "width": 8, "init": {"recipe": "gpt2"}}, TensorinitError, "layers[0].init.recipe_params.n_layer"),
    (
        {"depth": 2, "width": 8, "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 0}}},
        TensorinitError,
        "layers[0].init.recipe_params.n_layer",
    ),
    (
        {"depth": 2, "width": 8, "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 2}, "shape": [8, 8]}},
        InvalidParameterError,
        "layers[0].init.shape",
    ),
    ({"depth": 2, "width": 8, "init": {"recipe": "gpt2", "recipe_params": 5}}, InvalidParameterError, "layers[0].init.recipe_params"),
    (
        {"depth": 2, "width": 8, "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 1}, "roles": 5}},
        InvalidParameterError,
        "layers[0].init.roles",
    ),
    (
        {"depth": 2, "width": 8, "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 1}, "roles": {"readout": 5}}},
        TensorinitError,
        "layers[0].init.roles.readout",
    ),
    # gpt2 covers linear layers, not convolutions: a 422 at the layer's init, naming the tensors.
    (
        {"layers": [{"width": 8, "kernel": [3]}], "spatial": [8], "init": {"recipe": "gpt2", "recipe_params": {"n_layer": 1}}},
        InvalidParameterError,
        "layers[0].init",
    ),
]


@pytest.mark.parametrize(("document", "error", "param"), BAD)
def test_invalid_networks_name_the_field(document: dict[str, Any], error: type[Exception], param: str) -> None:
    with pytest.raises(error) as caught:
        build_network(document, propagation_limits=PropagationLimits())
    assert isinstance(caught.value, TensorinitError)
    assert caught.value.param == param


WRONG_AND_TOO_LARGE: list[tuple[dict[str, Any], list[Any], Limits, type[Exception], str]] = [
    # a compare entry past max_compare is checked as the allowed ones are
    ({"depth": 2, "width": 8}, ["he_normal", "lecun_normal", "he_nromal"], Limits(), UnknownSchemeError, "layers[0].init.scheme"),
    ({"depth": 2, "width": 8}, ["he_normal", "lecun_normal", "glorot_normal"], Limits(), LimitExceededError, "compare"),
    # a spec over max_elements waits until the form of the rest is checked
    (
        {"layers": [{"width": 64}, {"width": 4, "init": {"scheme": "he_normal", "gain": "big"}}]},
        ["he_normal"],
        Limits(max_elements=1000),
        TensorinitError,
        "layers[1].init.gain",
    ),
    ({"layers": [{"width": 64}, {"width": 4}]}, ["he_normal"], Limits(max_elements=1000), LimitExceededError, "layers[0].init.shape"),
    # past a limit, no more is checked than the largest allowed request: a million schemes cost no more
    (
        {"depth": 1000, "width": 8},
        [{"scheme": "he_normal", "gain": 1 + i / 1e6} for i in range(10**6)],
        Limits(),
        LimitExceededError,
        "compare",
    ),
]


@pytest.mark.parametrize(("document", "inits", "limits", "error", "param"), WRONG_AND_TOO_LARGE)
def test_form_before_limits_over_every_network(
    document: dict[str, Any], inits: list[Any], limits: Limits, error: type[Exception], param: str
) -> None:
    with pytest.raises(error) as caught:
        build_networks(document, inits, limits=limits, propagation_limits=PropagationLimits(max_compare=1))
    assert isinstance(caught.value, TensorinitError)
    assert caught.value.param == param


# -- a recipe's choice for a layer ----------------------------------------------------------------

RECIPE_CASES = [
    # (recipe, params, the weight's std by hand (None: uniform, bound given), bias kind)
    ("gpt2", {"n_layer": 3}, 0.02, "zeros"),
    ("gpt2", {"n_layer": 3, "std": 0.05}, 0.05, "zeros"),
    ("fixup", {"num_layers": 4}, math.sqrt(2 / 64), "zeros"),  # not a branch layer: He normal (fan_out)
    ("torch", {}, 1 / math.sqrt(3 * 64), "uniform"),  # U(±1/√fan_in): std = bound/√3
    ("keras", {}, math.sqrt(2 / (64 + 64)), "zeros"),  # glorot_uniform
]


@pytest.mark.parametrize(("name", "params", "std", "bias_kind"), RECIPE_CASES)
def test_a_recipe_gives_each_layer_what_plan_recipe_gives_the_network(
    name: str, params: dict[str, Any], std: float, bias_kind: str
) -> None:
    net = _net(depth=3, width=64, seed=9, init={"recipe": name, "recipe_params": params})
    manifest = {
        f"layers.{i}.{role}": {"shape": shape, "kind": "linear"} for i in range(3) for role, shape in (("weight", [64, 64]), ("bias", [64]))
    }
    planned = {s.name: s for s in plan_recipe(name, manifest, recipe_params=params, seed=9).specs}
    for i, layer in enumerate(net.layers):
        assert layer.weight == planned[f"layers.{i}.weight"]
        assert layer.bias == planned[f"layers.{i}.bias"]
        assert layer.bias is not None
        assert layer.bias.scheme == bias_kind
        assert layer.sigma_w2 == pytest.approx(64 * std * std, rel=1e-9)  # σ_w² = fan_in·Var(W), from the recipe's spec
        assert (generate(layer.weight) == generate(planned[f"layers.{i}.weight"])).all()
    th = theory(net)
    assert th.forward[0] == pytest.approx(64 * std * std + net.layers[0].bias_square, rel=1e-9)  # q_1 = σ_w²·1 + σ_b²


def test_a_recipe_s_bias_yields_to_an_explicit_one_and_its_depth_to_the_network() -> None:
    recipe = {"recipe": "gpt2", "recipe_params": {"n_layer": 2}}
    no_bias = _net(depth=2, width=16, init=recipe, bias=None)
    assert all(layer.bias is None for layer in no_bias.layers)
    ones = build_network({"layers": [{"width": 16, "bias": "ones"}, {"width": 16}], "init": recipe, "batch": 4})
    assert ones.layers[0].bias is not None and ones.layers[0].bias.scheme == "ones"
    assert ones.layers[1].bias is not None and ones.layers[1].bias.scheme == "zeros"  # the recipe's
    mixed = build_network({"layers": [{"width": 16, "init": "he_normal"}, {"width": 16, "init": recipe}], "batch": 4})
    assert mixed.layers[0].weight.scheme == "he_normal"
    assert mixed.layers[1].weight.distribution.std == pytest.approx(0.02)  # type: ignore[union-attr]


# -- cost: memory and work bounded before any work (issue 17) -------------------------------------

BOUNDED = [
    {"depth": 3, "width": 256, "batch": 64, "activation": "relu", "init": "he_normal"},
    {"depth": 3, "width": 256, "batch": 64, "activation": "tanh", "init": "he_normal", "dtype": "float64", "convention": "keras"},
    {"depth": 2, "width": 384, "batch": 8, "activation": "tanh", "init": "orthogonal"},
    {"depth": 3, "width": 64, "batch": 32, "activation": "gelu", "init": "lecun_normal", "residual": {"multiplier": 0.5, "norm": "layer"}},
    {"layers": [{"width": 16, "kernel": [3, 3]}] * 2, "input_width": 8, "spatial": [12, 12], "batch": 8, "init": "he_normal"},
    {"layers": [{"width": 32, "kernel": [3, 3], "init": "delta_orthogonal"}] * 2, "spatial": [8, 8], "batch": 4, "convention": "jax"},
]


@pytest.mark.parametrize("document", BOUNDED)
def test_measure_bytes_bounds_what_the_pass_allocates(document: dict[str, Any]) -> None:
    import tracemalloc

    net = build_network(document)
    measure(net)  # warm: the first pass pays for imports and caches
    tracemalloc.start()  # numpy reports its buffers, from every thread (the weights are made on the inner pool)
    try:
        measure(net)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= net.measure_bytes(), (peak, net.measure_bytes())


ISSUE_17 = [
    # width 23170, depth 2 used +4.1 GiB; the widest layer width × batch allowed (46340) would need 16-24 GiB
    ({"depth": 2, "width": 23170, "batch": 1, "init": "he_normal"}, "max_propagation_bytes"),
    ({"depth": 1, "width": 46340, "batch": 1, "init": "he_normal"}, "max_propagation_bytes"),
    # depth 1000, width 4096, batch 1, orthogonal: about an hour (about 9 with compare)
    ({"depth": 1000, "width": 4096, "batch": 1, "init": "orthogonal"}, "max_propagation_flops"),
    ({"depth": 1000, "width": 2048, "batch": 1, "init": "orthogonal"}, "max_propagation_flops"),
    ({"depth": 1000, "width": 4096, "batch": 1, "init": "orthogonal", "compare": ["orthogonal"] * 8}, "max_propagation_bytes"),
    ({"depth": 1000, "width": 1024, "batch": 1, "init": "orthogonal", "compare": ["orthogonal"] * 8}, "max_propagation_flops"),
    ({"depth": 1000, "width": 512, "batch": 128, "init": "he_normal"}, "max_propagation_flops"),  # within max_propagation_cells
]


@pytest.mark.parametrize(("document", "limit"), ISSUE_17)
def test_costly_measurements_are_refused_before_any_work(document: dict[str, Any], limit: str) -> None:
    import time

    compare = document.pop("compare", [])
    t = time.perf_counter()
    with pytest.raises(LimitExceededError) as caught:
        build_networks(document, [None, *compare], measured=True, limits=Limits(max_orthogonal_elements=1 << 30))
    assert caught.value.limit_name == limit
    assert caught.value.param == "measure"  # measure false: the theory alone, which neither limit counts
    assert time.perf_counter() - t < 5.0  # nothing was drawn (one orthogonal 4096² alone is 16 s)
    assert build_networks(document, [None, *compare], measured=False, limits=Limits(max_orthogonal_elements=1 << 30))


def test_flops_count_every_pass_every_network_and_the_qr() -> None:
    from service.core.costs import GENERATE, ORTHOGONAL
    from service.core.propagation.networks import CELL_FLOPS

    one = build_network({"depth": 1, "width": 32, "batch": 4, "init": "he_normal"})
    two = build_network({"depth": 2, "width": 32, "batch": 4, "init": "he_normal"})
    orth = build_network({"depth": 2, "width": 32, "batch": 4, "init": "orthogonal"})
    layer = 2 * 4 * 32 * 32 + GENERATE * 32 * 32  # one pass: the matmul and the weight drawn
    cells = CELL_FLOPS * 32 * 4
    assert one.measure_flops() == layer + cells  # a plain first layer's weight is not needed backward
    assert two.measure_flops() == 3 * layer + 2 * cells
    assert orth.measure_flops() == two.measure_flops() + 3 * ORTHOGONAL * 32**3
