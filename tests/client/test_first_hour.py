"""Issue 18, a newcomer's first hour: the client's traps, each row one of the inputs that hit them.

Every call goes to the real service on a loopback port (or to a port where nothing
listens, for refusals that must come before any request), through both twins where
the behaviour is planned in ``_base``.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import httpx
import ml_dtypes
import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from tensorinit import AsyncClient, Client, Plan, Propagation, ValidationError
from tensorinit._base import init_call
from tensorinit._manifest import module_manifest
from tensorinit._receive import ScatterSink
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from service.core import generate, resolve
from service.core.recipes import plan_recipe

from .conftest import Twin

DEAD = "http://127.0.0.1:9"
ROOT = Path(__file__).resolve().parents[2]


def engine(scheme: str, shape: tuple[int, ...], *, name: str, seed: int = 0, dtype: str = "float32", **params: Any) -> np.ndarray:
    """The bytes the engine itself makes for one request: what every served tensor must equal."""
    return generate(resolve(scheme, shape, params=params, name=name, seed=seed, dtype=dtype))


def engine_tensor(scheme: str, shape: tuple[int, ...], *, name: str, seed: int = 0, dtype: str = "float32") -> torch.Tensor:
    array = engine(scheme, shape, name=name, seed=seed, dtype=dtype)
    return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16) if dtype == "bfloat16" else torch.from_numpy(array)


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


# -- 1. the name is half of the random key ----------------------------------------------

# (method, arguments): each must be refused, before any request, saying why a name is needed.
UNNAMED: list[Any] = [
    pytest.param("init", lambda tmp: (("normal", (256, 256)), {"std": 0.02}), id="init-q-without-name"),
    pytest.param("init", lambda tmp: (("he_normal", (8, 8)), {"seed": 1}), id="init-he-normal"),
    pytest.param("stats", lambda tmp: (("normal", (8, 16)), {}), id="stats-scheme"),
    pytest.param("stats", lambda tmp: (({"scheme": "normal", "shape": [8, 8]},), {}), id="stats-mapping"),
    pytest.param("download", lambda tmp: (({"scheme": "normal", "shape": [8, 8]}, tmp / "w.safetensors"), {}), id="download"),
]


@pytest.mark.parametrize(("method", "make"), UNNAMED)
def test_one_tensor_without_a_name_is_refused_saying_why(twin: Twin, tmp_path: Path, method: str, make: Callable[..., Any]) -> None:
    args, kwargs = make(tmp_path)
    with pytest.raises(TypeError, match=r"name.*random key, like a JAX PRNG key.*same \(seed, name\)"):
        twin(DEAD, {"max_retries": 0}, method, *args, **kwargs)
    assert not (tmp_path / "w.safetensors").exists()


def test_two_names_give_two_tensors_and_one_name_the_same(live_url: str) -> None:
    with Client(live_url) as client:
        q = client.init("normal", (256, 256), std=0.02, name="q")
        k = client.init("normal", (256, 256), std=0.02, name="k")
        q_again = client.init("normal", (256, 256), std=0.02, name="q")
    assert abs(np.corrcoef(q.ravel(), k.ravel())[0, 1]) < 0.02
    assert q.tobytes() == q_again.tobytes() == engine("normal", (256, 256), name="q", std=0.02).tobytes()


# -- 4a. dtypes in any framework's spelling ---------------------------------------------

# (dtype as the user writes it, the served dtype's name)
DTYPES: list[Any] = [
    pytest.param(torch.bfloat16, "bfloat16", id="torch.bfloat16"),
    pytest.param(torch.float16, "float16", id="torch.float16"),
    pytest.param(torch.float32, "float32", id="torch.float32"),
    pytest.param(torch.float64, "float64", id="torch.float64"),
    pytest.param(np.float16, "float16", id="np.float16"),
    pytest.param(ml_dtypes.bfloat16, "bfloat16", id="ml_dtypes.bfloat16"),
    pytest.param(np.dtype("float64"), "float64", id="np.dtype"),
    pytest.param("bfloat16", "bfloat16", id="string"),
]


@pytest.mark.parametrize(("dtype", "served"), DTYPES)
def test_dtype_in_any_spelling(twin: Twin, live_url: str, dtype: Any, served: str) -> None:
    want = engine("he_normal", (24, 16), name="w", seed=5, dtype=served)
    as_numpy = twin(live_url, {}, "init", "he_normal", (24, 16), name="w", seed=5, dtype=dtype)
    as_torch = twin(live_url, {}, "init", "he_normal", (24, 16), name="w", seed=5, dtype=dtype, framework="torch")
    assert as_numpy.dtype == want.dtype and as_numpy.tobytes() == want.tobytes()
    assert str(as_torch.dtype) == f"torch.{served}" and raw_bytes(as_torch) == want.tobytes()


@pytest.mark.parametrize("dtype", [torch.int8, np.int32, np.complex64, "int8"], ids=["torch.int8", "np.int32", "np.complex64", "str"])
def test_a_dtype_outside_the_four_is_refused_naming_it(twin: Twin, live_url: str, dtype: Any) -> None:
    error = ValidationError if isinstance(dtype, str) else ValueError  # names are the server's to check, and it lists them
    with pytest.raises(error, match="dtype"):
        twin(live_url, {"max_retries": 0}, "init", "zeros", (2,), name="w", dtype=dtype)


# -- 4b. out= a torch tensor ------------------------------------------------------------


def _param() -> torch.Tensor:
    return nn.Parameter(torch.full((64, 32), 7.0))


# (the out tensor, the request's dtype, the served dtype)
OUTS: list[Any] = [
    pytest.param(lambda: torch.full((64, 32), 7.0), None, "float32", id="contiguous-f32"),
    pytest.param(lambda: torch.zeros((64, 32), dtype=torch.bfloat16), None, "bfloat16", id="contiguous-bf16-dtype-from-out"),
    pytest.param(lambda: torch.zeros((32, 64)).t(), None, "float32", id="strided-transposed-view"),
    pytest.param(lambda: torch.zeros((64, 32), dtype=torch.float64), "float32", "float32", id="f64-out-f32-served-copy"),
    pytest.param(_param, None, "float32", id="parameter-requires-grad"),
]


@pytest.mark.parametrize(("make", "dtype", "served"), OUTS)
def test_out_a_torch_tensor(twin: Twin, live_url: str, make: Callable[[], torch.Tensor], dtype: Any, served: str) -> None:
    out = make()
    version_before, pointer = out._version, out.data_ptr()
    got = twin(live_url, {}, "init", "he_uniform", (64, 32), name="fc.weight", seed=2, out=out, dtype=dtype, verify=True)
    want = engine_tensor("he_uniform", (64, 32), name="fc.weight", seed=2, dtype=served)
    assert got is out and out.data_ptr() == pointer and out._version > version_before
    assert torch.equal(out.detach(), want.to(out.dtype))


# (the out tensor, the request's dtype, whether the bytes land straight in its storage)
PATHS: list[Any] = [
    pytest.param(lambda: torch.zeros((64, 32)), None, True, id="contiguous-cpu-straight"),
    pytest.param(lambda: torch.zeros((64, 32), dtype=torch.bfloat16), None, True, id="bf16-straight"),
    pytest.param(lambda: torch.zeros((32, 64)).t(), None, False, id="strided-through-copy"),
    pytest.param(lambda: torch.zeros((64, 32), dtype=torch.float64), "float32", False, id="other-dtype-through-copy"),
]


@pytest.mark.parametrize(("make", "dtype", "straight"), PATHS)
def test_out_a_contiguous_cpu_tensor_receives_the_bytes_straight(
    live_url: str, make: Callable[[], torch.Tensor], dtype: Any, straight: bool
) -> None:
    out = make()
    call = init_call(
        "he_uniform", (64, 32), seed=0, dtype=dtype, name="w", convention="torch", framework=None, out=out, device=None, params={}
    )
    with Client(live_url) as client:
        assert client._run(call, False) is out
    assert isinstance(call.sink, ScatterSink) and (list(call.sink.placed) == ["w"]) is straight
    want = engine_tensor("he_uniform", (64, 32), name="w", dtype="bfloat16" if out.dtype == torch.bfloat16 else "float32")
    assert torch.equal(out, want.to(out.dtype))


def test_out_of_another_shape_is_refused_and_left_alone(twin: Twin, live_url: str) -> None:
    out = torch.full((64, 31), 7.0)
    with pytest.raises(ValueError, match=r"out: a tensor of shape \[64, 31\]; the server sends F32 × \[64, 32\]"):
        twin(live_url, {}, "init", "he_uniform", (64, 32), name="w", out=out)
    assert torch.all(out == 7)


# (framework, device): torch returns the tensor there; a device without torch is refused before a request
DEVICES: list[Any] = [
    pytest.param("torch", "cpu", None, id="cpu"),
    pytest.param("torch", torch.device("meta"), None, id="staged-then-moved"),
    pytest.param("numpy", "cpu", "only framework='torch' takes a device", id="numpy-refused"),
]


@pytest.mark.parametrize(("framework", "device", "refusal"), DEVICES)
def test_framework_torch_takes_a_device(twin: Twin, live_url: str, framework: str, device: Any, refusal: str | None) -> None:
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            twin(DEAD, {"max_retries": 0}, "init", "normal", (8, 4), name="w", framework=framework, device=device)
        return
    got = twin(live_url, {}, "init", "normal", (8, 4), name="w", framework=framework, device=device, dtype=torch.bfloat16)
    many = twin(live_url, {}, "init_many", {"a": {"scheme": "ones", "shape": [3]}}, framework=framework, device=device)
    assert got.device == torch.device(device) and got.dtype == torch.bfloat16 and tuple(got.shape) == (8, 4)
    assert many["a"].device == torch.device(device)
    if got.device.type == "cpu":
        assert raw_bytes(got) == engine("normal", (8, 4), name="w", dtype="bfloat16").tobytes()


# -- 4c. fields the server does not know: refused before a request ---------------------

# (method, arguments, message): the only request sent is GET /schemes, for the fields.
UNKNOWN: list[Any] = [
    pytest.param(
        "init",
        (("he_normal", (4, 4)), {"name": "w", "stdd": 0.02}),
        "init: unknown field 'stdd'; allowed: the fields of he_normal",
        id="typo",
    ),
    pytest.param(
        "init",
        (("kaiming_normal", (4, 4)), {"name": "w", "std": 0.02}),
        "unknown field 'std'; allowed: the fields of he_normal",
        id="alias",
    ),
    pytest.param("stats", (("normal", (4, 4)), {"name": "w", "mode": "fan_in"}), "stats: unknown field 'mode'", id="stats"),
    pytest.param(
        "init_many",
        (({"w": {"scheme": "zeros", "shape": [2], "gain": 2}},), {}),
        r"init_many: tensors\['w'\]: unknown field 'gain'",
        id="init-many",
    ),
    pytest.param(
        "init_state_dict",
        (({"w": [2, 2]}, [("w", {"scheme": "normal", "pad": 1})]), {}),
        r"init_state_dict: tensors\['w'\]: unknown field 'pad'",
        id="state-dict-rule",
    ),
]


@pytest.mark.parametrize(("method", "call", "message"), UNKNOWN)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unknown_fields_are_refused_before_the_request(live_url: str, kind: str, method: str, call: Any, message: str) -> None:
    sent: list[str] = []
    args, kwargs = call
    if kind == "sync":
        hooks = {"request": [lambda r: sent.append(f"{r.method} {r.url.path}")]}
        with httpx.Client(event_hooks=hooks) as http, Client(live_url, http_client=http) as c, pytest.raises(TypeError, match=message):
            getattr(c, method)(*args, **kwargs)
    else:

        async def record(r: httpx.Request) -> None:
            sent.append(f"{r.method} {r.url.path}")

        async def run() -> None:
            async with httpx.AsyncClient(event_hooks={"request": [record]}) as http, AsyncClient(live_url, http_client=http) as c:
                with pytest.raises(TypeError, match=message):
                    await getattr(c, method)(*args, **kwargs)

        anyio.run(run)
    assert sent == ["GET /schemes"]


# -- 2. init_module by recipe on transformers' GPT-2 (Conv1D), and kinds= ----------------


def _gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config)


def test_gpt2lmheadmodel_by_recipe_with_conv1d(twin: Twin, live_url: str) -> None:
    model = _gpt2()
    c_attn = model.get_submodule("transformer.h.0.attn.c_attn")
    assert type(c_attn).__name__ == "Conv1D" and tuple(model.get_parameter("transformer.h.0.attn.c_attn.weight").shape) == (
        32,
        96,
    )  # (in, out)
    done = twin(live_url, {}, "init_module", model, recipe="gpt2", recipe_params={"n_layer": 2}, seed=3)
    plan = twin(live_url, {}, "plan_module", model, recipe="gpt2", recipe_params={"n_layer": 2}, seed=3)
    assert isinstance(plan, Plan) and "transformer.h.0.attn.c_attn.weight" in done
    spec = plan["transformer.h.0.attn.c_attn.weight"]
    assert spec.shape == (96, 32) and spec.std == pytest.approx(0.02)  # served as a linear's (out, in); gpt2's N(0, 0.02²) reads no fans
    assert plan["transformer.h.1.mlp.c_fc.weight"].shape == (128, 32)
    assert plan["transformer.h.0.attn.c_proj.weight"].std == pytest.approx(0.02 / math.sqrt(4))  # residual: std/√(2·n_layer)
    assert plan["transformer.h.0.mlp.c_proj.weight"].std == pytest.approx(0.01)
    assert plan["transformer.wte.weight"].std == pytest.approx(0.02)
    described = module_manifest(model)
    assert described.transposed == {
        f"transformer.h.{i}.{m}.weight" for i in (0, 1) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    engine_plan = plan_recipe("gpt2", described.manifest, recipe_params={"n_layer": 2}, seed=3)
    for served in engine_plan.specs:  # every tensor holds the engine's bytes, Conv1D weights transposed back
        values = torch.from_numpy(generate(served))
        held = model.get_parameter(served.name).detach()
        assert torch.equal(held, values.t() if served.name in described.transposed else values), served.name


def test_gpt2_fans_under_a_fan_reading_recipe(live_url: str) -> None:
    """Recipe torch bounds a bias by its weight's fan_in: 1/√32 (in), not 1/√96 (what (in, out) read as torch gives)."""
    with Client(live_url) as client:
        plan = client.plan_module(_gpt2(), recipe="torch")
    bias = plan["transformer.h.0.attn.c_attn.bias"]
    assert bias.distribution["high"] == pytest.approx(1 / math.sqrt(32))
    weight = plan["transformer.h.0.attn.c_attn.weight"]
    assert weight.distribution["high"] == pytest.approx(1 / math.sqrt(32)) and weight.fan_in == 32


class Mixer(nn.Module):
    """A custom layer a recipe does not know: weight stored (in, out), like a Keras Dense."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(6, 12))  # (out, in), as nn.Linear


def _custom() -> nn.Module:
    model = nn.Sequential(nn.Linear(12, 12), Mixer(12, 48))
    model.add_module("gate", Gate())
    return model


# (kinds, the Mixer weight's (fan_in, fan_out), the gate weight's (fan_in, fan_out))
KINDS: list[Any] = [
    pytest.param({Mixer: ("linear", "in_out"), "gate": "linear"}, (12, 48), (12, 6), id="class-and-glob"),
    pytest.param({"1": ("linear", "in_out"), "g*": ("linear", "out_in")}, (12, 48), (12, 6), id="globs"),
]


@pytest.mark.parametrize(("kinds", "mixer", "gate"), KINDS)
def test_a_custom_layer_joins_a_recipe_through_kinds(
    twin: Twin, live_url: str, kinds: Any, mixer: tuple[int, int], gate: tuple[int, int]
) -> None:
    model = _custom()
    plan = twin(live_url, {}, "plan_module", model, recipe="torch", kinds=kinds)
    assert (plan["1.weight"].fan_in, plan["1.weight"].fan_out) == mixer
    assert (plan["gate.weight"].fan_in, plan["gate.weight"].fan_out) == gate
    assert plan["1.bias"].distribution["high"] == pytest.approx(1 / math.sqrt(12))
    done = twin(live_url, {}, "init_module", model, recipe="torch", kinds=kinds, seed=4)
    assert done == ["0.weight", "0.bias", "1.weight", "1.bias", "gate.weight"]
    bound = 1 / math.sqrt(12)
    mixed = model.get_parameter("1.weight").detach()
    assert float(mixed.abs().max()) <= bound and float(mixed.std()) > bound / 3


def test_without_kinds_the_custom_layer_is_named_as_uncovered(live_url: str) -> None:
    with Client(live_url) as client, pytest.raises(ValidationError, match=r"1\.weight"):
        client.init_module(_custom(), recipe="torch")


@pytest.mark.parametrize(
    ("kinds", "message"),
    [({Mixer: ("linear", "sideways")}, "layout 'sideways'; allowed: out_in, in_out"), ({"gate": ("linear", "in_out")}, "")],
    ids=["bad-layout", "in-out-marks-the-weight-transposed"],
)
def test_kinds_layout_is_checked(kinds: Any, message: str) -> None:
    if message:
        with pytest.raises(ValueError, match=message):
            module_manifest(_custom(), kinds=kinds)
    else:
        assert module_manifest(_custom(), kinds=kinds).transposed == {"gate.weight"}


# -- 4d. typed /plan and /propagation, and progress on every fetch -------------------------


def test_plan_of_a_manifest_is_typed(twin: Twin, live_url: str) -> None:
    manifest = {"fc.weight": {"shape": (64, 16), "kind": "linear"}, "fc.bias": {"shape": [64], "kind": "linear"}}
    plan = twin(live_url, {}, "plan", manifest, recipe="torch", dtype=torch.bfloat16)
    assert isinstance(plan, Plan) and list(plan.specs) == ["fc.weight", "fc.bias"]
    assert (plan["fc.weight"].fan_in, plan["fc.weight"].fan_out, plan["fc.weight"].dtype) == (16, 64, "bfloat16")
    assert plan["fc.bias"].rule is not None and "fan_in 16" in plan["fc.bias"].rule
    assert plan.elements == 64 * 16 + 64 and plan.etag


def test_propagation_is_typed(twin: Twin, live_url: str) -> None:
    got = twin(live_url, {}, "propagation", depth=6, width=32, init="he_normal", compare=["lecun_normal"], batch=32, bias=None)
    assert isinstance(got, Propagation)
    assert got.verdict == "stable" and got.summary.gain_for_unit_chi == pytest.approx(1.0)
    assert [n.label for n in got.networks] == ["he_normal", "lecun_normal"] and got["lecun_normal"].verdict.verdict == "vanishing"
    first = got.layers[0]
    assert (first.fan_in, first.fan_out) == (32, 32) and first.sigma_w2 == pytest.approx(2.0) and first.bias is None
    assert first.weight is not None and first.weight.name == "layers.0.weight" and first.forward.measured is not None


def test_propagation_refuses_a_field_it_does_not_know(live_url: str) -> None:
    with Client(live_url) as client, pytest.raises(TypeError, match="deepth"):
        client.propagation(deepth=4)  # type: ignore[call-arg]


# (method, arguments): a callable progress sees the whole body arrive
PROGRESS: list[Any] = [
    pytest.param("init_many", lambda: (({"a": {"scheme": "normal", "shape": [512, 512]}},), {}), id="init-many"),
    pytest.param("init_module", lambda: ((nn.Linear(512, 512),), {"recipe": "torch"}), id="init-module"),
    pytest.param("init", lambda: (("zeros", (512, 512)), {"name": "z"}), id="init"),
]


@pytest.mark.parametrize(("method", "make"), PROGRESS)
def test_progress_reports_like_download(twin: Twin, live_url: str, method: str, make: Callable[[], Any]) -> None:
    seen: list[tuple[int, int | None]] = []
    args, kwargs = make()
    twin(live_url, {}, method, *args, progress=lambda n, total: seen.append((n, total)), **kwargs)
    assert seen and seen[-1][0] == seen[-1][1] and seen[-1][0] > 512 * 512 * 4


# -- 5. text /stats shows the fans --------------------------------------------------------

# (request, lines the text must hold)
TEXT_STATS: list[Any] = [
    pytest.param(
        {"scheme": "he_normal", "shape": "256,128", "name": "q"},
        [
            "fans       fan_in 128, fan_out 256 (torch layout: fan_in = shape[1]*prod(shape[2:]), fan_out = shape[0]*prod(shape[2:]))",
            "scale      mode fan_in uses fan 128 · gain 1.41421 (leaky_relu, negative slope 0) · variance = scale / fan = 2 / 128 = 0.015625",
        ],
        id="he-normal-torch",
    ),
    pytest.param(
        {"scheme": "glorot_uniform", "shape": "3,3,16,32", "name": "conv", "convention": "keras"},
        ["fans       fan_in 144, fan_out 288 (keras layout:", "mode fan_avg uses fan 216 · gain 1 · variance = scale / fan = 1 / 216"],
        id="glorot-keras-conv",
    ),
    pytest.param(
        {"scheme": "normal", "shape": "256,128", "name": "q", "std": "0.02"},
        ["fans       none: normal does not read fans off the shape"],
        id="normal-no-fans",
    ),
]


@pytest.mark.parametrize(("query", "lines"), TEXT_STATS)
def test_text_stats_shows_fans_and_gain(live_url: str, query: dict[str, str], lines: list[str]) -> None:
    r = httpx.get(f"{live_url}/stats", params=query, headers={"Accept": "text/plain"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for line in lines:
        assert line in r.text, r.text
    assert "every value inside" in r.text and "(below" not in r.text


# -- 4e. the [torch] extra keeps the torch a user has ----------------------------------


def test_the_torch_extra_is_satisfied_by_the_installed_torch_and_pins_agree_with_the_service() -> None:
    client = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
    service = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (extra,) = [Requirement(r) for r in client["optional-dependencies"]["torch"]]
    assert extra.name == "torch" and extra.specifier.contains(version("torch").split("+")[0])  # pip then leaves it alone
    assert all(spec.operator == ">=" for spec in extra.specifier), "an upper bound or a pin could pull a new multi-GB build"
    pinned = {Requirement(r).name: Requirement(r) for r in service["dependencies"]}
    for line in client["dependencies"]:
        ours = Requirement(line)
        if ours.name in pinned:  # the version the service runs satisfies the client's range too
            assert ours.specifier.contains(version(ours.name)) and pinned[ours.name].specifier.contains(version(ours.name)), ours.name


def test_sha256_of_a_named_tensor_matches_its_stats(live_url: str) -> None:
    with Client(live_url) as client:
        stats = client.stats("he_normal", (64, 32), name="fc.weight", seed=1, dtype=torch.float16)
        body = client.init("he_normal", (64, 32), name="fc.weight", seed=1, dtype=np.float16)
    assert stats["fc.weight"].sha256 == hashlib.sha256(body.tobytes()).hexdigest()
