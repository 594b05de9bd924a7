"""What both clients plan in :mod:`tensorinit._base`, checked through each twin.

The sync and async clients plan every call in ``_base`` and only send it. These tables
hold the behaviours the rest of tests/client checks through one client only: refusals
before (or instead of) a request, results built from the answer (``init_tree``, ``out=``,
shards, calls that need no request, an API key) and the retry decisions of one call.
Every row runs through :class:`Client` and :class:`AsyncClient` against real servers:
the service on a loopback port, tests/client/faulty.py, or a port where nothing listens
for calls that must never reach a server (any request there is an APIConnectionError).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load
from tensorinit import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NoMatchingRuleError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    ValidationError,
)
from tensorinit._manifest import tree_manifest
from torch import nn

from service.core import ALGORITHM_VERSION, generate, resolve
from service.core.recipes import plan_recipe

from .conftest import API_KEY, Twin
from .faulty import Fault, digests_of, serve

Make = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]
"""Fresh positional and keyword arguments for one run (arrays and modules are filled in place)."""

DEAD = "http://127.0.0.1:9"
RULES: list[tuple[str, Any]] = [("weight", "he_uniform"), ("bias", "zeros")]
SPECS = {"a": {"scheme": "normal", "shape": [512, 512]}, "b": {"scheme": "normal", "shape": [1000]}}


@pytest.fixture
def servers(live_url: str, keyed_url: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Where a row's call goes, and with which client arguments."""
    return {
        "live": (live_url, {}),
        "dead": (DEAD, {"max_retries": 0}),
        "keyed": (keyed_url, {"api_key": API_KEY}),
        "wrong-key": (keyed_url, {"api_key": "wrong", "max_retries": 0}),
    }


def expected(scheme: str, shape: tuple[int, ...], **kw: Any) -> np.ndarray:
    params = {k: kw.pop(k) for k in list(kw) if k not in ("seed", "dtype", "name", "convention")}
    return generate(resolve(scheme, shape, params=params, **kw))


def _meta_linear() -> nn.Module:
    with torch.device("meta"):
        return nn.Linear(4, 4)


def _snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[bytes]:
    """The bytes of every array and module argument, to show a refused call left them alone."""
    out: list[bytes] = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, np.ndarray):
            out.append(value.tobytes())
        elif isinstance(value, nn.Module):
            out += [t.detach().numpy().tobytes() for t in value.state_dict().values() if not t.is_meta]
    return out


# -- refusals ------------------------------------------------------------------------------

# (server, method, arguments, error, message). On "dead", the refusal must come before any request.
REFUSALS: list[Any] = [
    pytest.param(
        "live",
        "init",
        lambda: (("he_normal", (64, 32)), {"name": "w", "dtype": "float32", "out": np.zeros((64, 32), np.float64)}),
        ValueError,
        "sends F32",
        id="out-dtype",
    ),
    pytest.param(
        "live",
        "init",
        lambda: (("he_normal", (64, 32)), {"name": "w", "out": np.zeros((64, 31), np.float32)}),
        ValueError,
        "× \\[64, 32\\]",
        id="out-shape",
    ),
    pytest.param(
        "dead",
        "init",
        lambda: (("zeros", (64, 32)), {"name": "w", "out": np.zeros((64, 64), np.float32)[:, ::2]}),
        ValueError,
        "C-contiguous",
        id="out-strided",
    ),
    pytest.param(
        "dead",
        "init",
        lambda: (("zeros", (2,)), {"name": "w", "out": np.zeros(2, np.float32), "framework": "torch"}),
        ValueError,
        "so framework must be 'numpy'; got 'torch'",
        id="out-framework",
    ),
    pytest.param(
        "dead", "init", lambda: (("zeros", (2,)), {"name": "w", "framework": "tf"}), ValueError, "framework: got 'tf'", id="init-framework"
    ),
    pytest.param("dead", "init_many", lambda: (({},), {"framework": "tf"}), ValueError, "framework: got 'tf'", id="many-framework"),
    pytest.param(
        "dead",
        "init_state_dict",
        lambda: (({"w": (2,)}, [("b", "zeros")]), {}),
        NoMatchingRuleError,
        "no rule matches 'w'",
        id="state-dict-rule",
    ),
    pytest.param("dead", "init_module", lambda: ((nn.Linear(4, 3),), {}), TypeError, "needs rules or a recipe", id="module-neither"),
    pytest.param(
        "dead",
        "init_module",
        lambda: ((nn.Linear(4, 3),), {"recipe": "torch", "shard": {"w": ((6, 4), "0:3,:")}}),
        ValueError,
        "shard names 'w', which is not a tensor of the module's manifest",
        id="module-recipe-shard-unknown",
    ),
    pytest.param("dead", "init_module", lambda: ((_meta_linear(), RULES), {}), ValueError, "meta device", id="module-meta-rules"),
    pytest.param(
        "dead", "init_module", lambda: ((_meta_linear(),), {"recipe": "torch"}), ValueError, "meta device", id="module-meta-recipe"
    ),
    pytest.param(
        "dead",
        "init_module",
        lambda: ((nn.Linear(4, 3), RULES), {"shard": {"missing": ((1,), ":")}}),
        ValueError,
        "does not have",
        id="module-shard-unknown",
    ),
    pytest.param(
        "live", "init_module", lambda: ((nn.Linear(4, 3),), {"recipe": "gpt2"}), ValidationError, "n_layer", id="module-recipe-invalid"
    ),
    pytest.param("live", "plan_module", lambda: ((nn.Linear(4, 3),), {"recipe": "gpt2"}), ValidationError, "n_layer", id="plan-invalid"),
    pytest.param(
        "dead", "stats", lambda: (({"scheme": "zeros", "shape": [2]}, (2,)), {}), TypeError, "takes no shape", id="stats-mapping-and-shape"
    ),
    pytest.param("dead", "stats", lambda: (("zeros",), {"name": "w"}), TypeError, "needs a shape", id="stats-no-shape"),
    pytest.param(
        "dead",
        "init_tree",
        lambda: (({"Dense_0": {"kernel": "x"}}, {"Dense_*": "linear"}), {"recipe": "flax"}),
        TypeError,
        "a tree leaf must be",
        id="tree-leaf",
    ),
    pytest.param(
        "dead",
        "init_tree",
        lambda: (({"Dense_0": {"weights": (2, 2)}}, {"Dense_*": "linear"}), {"recipe": "flax"}),
        ValueError,
        "'weights' of a linear has no known role",
        id="tree-role",
    ),
    pytest.param("dead", "version", lambda: ((), {}), APIConnectionError, "ConnectError", id="unreachable"),
    pytest.param("wrong-key", "version", lambda: ((), {}), AuthenticationError, "401", id="wrong-key"),
]


@pytest.mark.parametrize(("server", "method", "make", "error", "match"), REFUSALS)
def test_both_clients_refuse_alike_and_leave_the_arguments_alone(
    twin: Twin, servers: dict[str, tuple[str, dict[str, Any]]], server: str, method: str, make: Make, error: type[Exception], match: str
) -> None:
    url, client = servers[server]
    args, kwargs = make()
    before = _snapshot(args, kwargs)
    with pytest.raises(error, match=match) as info:
        twin(url, client, method, *args, **kwargs)
    assert _snapshot(args, kwargs) == before
    if isinstance(info.value, APIError | APIConnectionError):
        assert info.value.__cause__ is None and info.value.__suppress_context__


# -- results -------------------------------------------------------------------------------

FLAX = {"Embed_*": "embedding", "Dense_*": "linear", "LayerNorm_*": "layer_norm"}


def _flax_params() -> dict[str, Any]:
    return {
        "Embed_0": {"embedding": np.zeros((100, 32), np.float32)},
        "Dense_0": {"kernel": (32, 64), "bias": (64,)},
        "LayerNorm_0": {"scale": (64,), "bias": (64,)},
        "free": np.ones(3, np.float32),
    }


def _check_tree(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    params = args[0]
    plan = plan_recipe("flax", tree_manifest(params, FLAX), seed=2, convention="jax", rules=[["free", None]])
    assert result["free"] is params["free"] and plan.specs
    for spec in plan.specs:
        module, leaf = spec.name.split(".")
        assert result[module][leaf].tobytes() == generate(spec).tobytes(), spec.name


def _check_out(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert result is kwargs["out"]
    want = expected(args[0], args[1], seed=kwargs["seed"], dtype=kwargs.get("dtype", "float32"))
    assert result.tobytes() == want.tobytes()


def _check_shard(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert result == ["weight", "bias"]
    local = args[0]
    whole = expected("he_uniform", (8, 16), seed=9, name="weight")
    assert local.weight.detach().numpy().tobytes() == whole[4:8].tobytes()
    assert not local.bias.detach().numpy().any()


def _check_slice(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert result.tobytes() == expected(args[0], args[1], seed=kwargs["seed"])[16:32].tobytes()


def _check_zeros(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert result["b"].empirical.max == 0 and result["b"].empirical.min == 0


def _check_version(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert result["algorithm"] == ALGORITHM_VERSION


def _equals(value: Any) -> Callable[..., None]:
    def check(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert result == value

    return check


# (server, method, arguments, check of the result given the arguments)
RESULTS: list[Any] = [
    pytest.param(
        "live",
        "init_tree",
        lambda: ((_flax_params(), FLAX), {"recipe": "flax", "rules": {"free": None}, "seed": 2, "verify": True}),
        _check_tree,
        id="tree",
    ),
    pytest.param(
        "live",
        "init",
        lambda: (("he_uniform", (600, 700)), {"name": "weight", "seed": 8, "out": np.full((600, 700), 7, np.float32), "verify": True}),
        _check_out,
        id="out-f32",
    ),
    pytest.param(
        "live",
        "init",
        lambda: (
            ("he_normal", (300, 7)),
            {"name": "weight", "seed": 3, "dtype": "bfloat16", "out": np.zeros((300, 7), ml_dtypes.bfloat16)},
        ),
        _check_out,
        id="out-bf16",
    ),
    pytest.param(
        "live",
        "init",
        lambda: (("he_normal", (64, 32)), {"name": "weight", "seed": 4, "slice": "16:32,:", "verify": True}),
        _check_slice,
        id="slice",
    ),
    pytest.param(
        "live",
        "init_module",
        lambda: ((nn.Linear(16, 4), RULES), {"seed": 9, "shard": {"weight": ((8, 16), "4:8,:"), "bias": ((8,), "4:8")}}),
        _check_shard,
        id="shard",
    ),
    pytest.param(
        "live",
        "stats",
        lambda: (({"scheme": "zeros", "shape": [4], "name": "b"},), {}),
        _check_zeros,
        id="stats-mapping",
    ),
    pytest.param("dead", "init_many", lambda: (({},), {}), _equals({}), id="many-empty"),
    pytest.param("dead", "init_module", lambda: ((nn.Linear(4, 3), [("*", None)]), {}), _equals([]), id="module-nothing"),
    pytest.param("keyed", "version", lambda: ((), {}), _check_version, id="api-key"),
]


@pytest.mark.parametrize(("server", "method", "make", "check"), RESULTS)
def test_both_clients_build_the_same_results(
    twin: Twin, servers: dict[str, tuple[str, dict[str, Any]]], server: str, method: str, make: Make, check: Callable[..., Any]
) -> None:
    url, client = servers[server]
    args, kwargs = make()
    check(twin(url, client, method, *args, **kwargs), args, kwargs)


# -- retries of one call -------------------------------------------------------------------

SLOW_503 = Fault(status=503, headers=(("Retry-After", "0"),))

# (script of faults, max_retries, error raised or None, requests the server sees)
RETRIES: list[Any] = [
    pytest.param([Fault(cut=100_000)] * 6, 1, None, 7, id="cuts-that-bring-bytes-never-exhaust"),
    pytest.param([Fault(cut=0)] * 3, 2, APIConnectionError, 3, id="cuts-without-bytes-count"),
    pytest.param([Fault(status=502), Fault(status=504)], 3, None, 3, id="502-504-retried"),
    pytest.param([SLOW_503] * 5, 2, ServiceUnavailable, 3, id="503-gives-up"),
    pytest.param([Fault(status=429, headers=(("Retry-After", "3600"),))], 3, RateLimitError, 1, id="retry-after-over-cap"),
    pytest.param([Fault(status=422)], 3, ValidationError, 1, id="422-never"),
    pytest.param([Fault(status=500)], 3, ServerError, 1, id="500-never"),
]


@pytest.mark.parametrize(("script", "max_retries", "error", "requests"), RETRIES)
def test_both_clients_count_failures_alike(
    twin: Twin, small_body: bytes, script: list[Fault], max_retries: int, error: type[Exception] | None, requests: int
) -> None:
    policy = RetryPolicy(max_retries=max_retries, initial_delay=0.01, max_delay=0.05)
    with serve(small_body, digests_of(small_body), script) as srv:
        if error is None:
            got = twin(srv.url, {"max_retries": policy}, "init_many", SPECS)
            want = load(small_body)
            assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in want.items()}
        else:
            with pytest.raises(error) as info:
                twin(srv.url, {"max_retries": policy}, "init_many", SPECS)
            assert info.value.__cause__ is None and info.value.__suppress_context__
            if isinstance(info.value, APIError):
                assert info.value.detail == "try later"
        assert len(srv.seen) == requests
