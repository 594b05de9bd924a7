"""Every public method, sync and async, against the real service on a loopback port.

Expected values come from the engine itself (``service.core``): the client must hand back
exactly the bytes the engine defines, in every dtype and framework.
"""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from tensorinit import AsyncClient, AuthenticationError, Client, NoMatchingRuleError, NotFound, Stats, ValidationError

from service.core import ALGORITHM_VERSION, generate, resolve

from .conftest import API_KEY

RULES: list[tuple[str, Any]] = [
    ("*.bias", "zeros"),
    ("1.weight", {"scheme": "he_uniform", "nonlinearity": "relu"}),
    ("2.weight", "ones"),
    ("*.weight", {"scheme": "glorot_uniform"}),
]


def expected(scheme: str, shape: tuple[int, ...], **kw: Any) -> np.ndarray:
    params = {k: kw.pop(k) for k in list(kw) if k not in ("seed", "dtype", "name", "convention")}
    return generate(resolve(scheme, shape, params=params, **kw))


def torch_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


@pytest.fixture
def client(live_url: str) -> Any:
    with Client(live_url) as c:
        yield c


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_init_returns_the_engines_bytes(client: Client, dtype: str) -> None:
    got = client.init("he_normal", (64, 32), name="weight", seed=7, dtype=dtype, mode="fan_out")
    want = expected("he_normal", (64, 32), seed=7, dtype=dtype, mode="fan_out")
    assert got.dtype == want.dtype and got.shape == (64, 32)
    assert got.tobytes() == want.tobytes()


def test_bfloat16_round_trip_numpy_and_torch(client: Client) -> None:
    want = expected("normal", (33, 17), seed=1, dtype="bfloat16", std=0.02)
    as_np = client.init("normal", (33, 17), name="weight", seed=1, dtype="bfloat16", std=0.02)
    assert as_np.dtype == np.dtype(ml_dtypes.bfloat16)
    as_torch = client.init("normal", (33, 17), name="weight", seed=1, dtype="bfloat16", std=0.02, framework="torch")
    assert as_torch.dtype == torch.bfloat16 and tuple(as_torch.shape) == (33, 17)
    assert as_torch.view(torch.int16).numpy().tobytes() == want.tobytes() == as_np.tobytes()


def test_torch_framework_and_verify(client: Client) -> None:
    got = client.init("orthogonal", (16, 16), name="weight", seed=2, framework="torch", verify=True)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert got.numpy().tobytes() == expected("orthogonal", (16, 16), seed=2).tobytes()


def test_jax_framework(client: Client) -> None:
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed here (optional extra 'jax')")
    got = client.init("uniform", (8, 4), name="weight", seed=3, dtype="bfloat16", framework="jax")
    assert got.dtype == jnp.bfloat16
    assert np.asarray(got).tobytes() == expected("uniform", (8, 4), seed=3, dtype="bfloat16").tobytes()


def test_init_many_keeps_the_request_order(client: Client) -> None:
    tensors = {"z.bias": {"scheme": "zeros", "shape": [5]}, "a.weight": {"scheme": "he_uniform", "shape": [5, 3], "dtype": "float64"}}
    got = client.init_many(tensors, seed=4, dtype="float16", verify=True)
    assert list(got) == ["z.bias", "a.weight"]
    assert got["a.weight"].tobytes() == expected("he_uniform", (5, 3), seed=4, dtype="float64", name="a.weight").tobytes()
    assert got["z.bias"].dtype == np.float16 and not got["z.bias"].any()


def test_init_state_dict_applies_rules_in_order(client: Client) -> None:
    shapes = {"0.weight": (4, 3), "0.bias": (4,), "1.weight": (2, 4), "norm.running_mean": (4,)}
    rules = [*RULES, ("norm.running_mean", None)]
    got = client.init_state_dict(shapes, rules, seed=5)
    assert list(got) == ["0.weight", "0.bias", "1.weight"]
    assert got["1.weight"].tobytes() == expected("he_uniform", (2, 4), seed=5, name="1.weight", nonlinearity="relu").tobytes()
    assert got["0.weight"].tobytes() == expected("glorot_uniform", (4, 3), seed=5, name="0.weight").tobytes()
    with pytest.raises(NoMatchingRuleError, match=r"norm\.running_mean"):
        client.init_state_dict(shapes, RULES)


def test_init_module_sets_every_parameter_to_the_servers_bytes(client: Client) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm(12))
    model[2].to(torch.bfloat16)
    before = {name: id(p) for name, p in model.named_parameters()}
    names = client.init_module(model, RULES, seed=9)
    params = dict(model.named_parameters())
    assert names == list(params)
    assert {name: id(p) for name, p in params.items()} == before
    for name, p in params.items():
        dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[p.dtype]
        spec = next(s for pat, s in RULES if fnmatchcase(name, pat))
        fields = {"scheme": spec} if isinstance(spec, str) else dict(spec)
        want = expected(fields.pop("scheme"), tuple(p.shape), seed=9, dtype=dtype, name=name, **fields)
        assert p.dtype == (torch.bfloat16 if name.startswith("2.") else torch.float32)
        assert p.requires_grad
        assert tuple(p.shape) == want.shape and torch_bytes(p) == want.tobytes(), name


def test_init_module_skips_integer_buffers(client: Client) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    rules = [("*.running_mean", "zeros"), ("*.running_var", "ones"), ("1.weight", "ones"), *RULES]
    names = client.init_module(model, rules)
    assert "1.num_batches_tracked" not in names
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert model[1].num_batches_tracked.dtype == torch.int64


def test_stats_is_typed_and_matches_the_body(client: Client) -> None:
    stats = client.stats("he_normal", (256, 128), name="weight", seed=3, bins=16)
    assert isinstance(stats, Stats) and stats.algorithm == ALGORITHM_VERSION
    weight = stats["weight"]
    assert weight.spec["fan_in"] == 128 and weight.theory.std == pytest.approx(0.125)
    assert weight.empirical.count == 256 * 128 and weight.empirical.histogram is not None
    assert len(weight.empirical.histogram.counts) == 16
    assert weight.empirical.ks is not None and 0 <= weight.empirical.ks.pvalue <= 1
    body = client.init("he_normal", (256, 128), name="weight", seed=3)
    assert weight.sha256 == hashlib.sha256(body.tobytes()).hexdigest()
    batch = client.stats({"tensors": {"b": {"scheme": "zeros", "shape": [3]}}})
    assert batch["b"].empirical.mean == 0 and batch.etag


def test_schemes_and_version(client: Client) -> None:
    catalogue = client.schemes()
    assert "he_normal" in {s["name"] for s in catalogue["schemes"]}
    assert client.schemes("kaiming_normal")["name"] == "he_normal"
    with pytest.raises(NotFound):
        client.schemes("no_such_scheme")
    assert client.version()["algorithm"] == ALGORITHM_VERSION


def test_validation_errors_carry_field_paths(client: Client) -> None:
    with pytest.raises(ValidationError) as info:
        client.init_many({"fc.weight": {"scheme": "normal", "shape": [2, 2], "std": -1.0}})
    err = info.value
    assert err.status_code == 422 and err.request_id
    assert err.errors and err.errors[0].path == ("tensors", "fc.weight", "std")
    assert err.errors[0].allowed and "0" in err.errors[0].allowed
    with pytest.raises(ValidationError) as info:
        client.init("he_nromal", (2, 2), name="w")
    assert "he_normal" in info.value.suggestions


def test_download_opens_with_safe_open(client: Client, tmp_path: Path) -> None:
    request = {"seed": 2, "dtype": "bfloat16", "tensors": {"w": {"scheme": "he_normal", "shape": [300, 200]}}}
    path = client.download(request, tmp_path / "w.safetensors", progress=False, verify=True)
    with safe_open(str(path), framework="pt") as f:
        w = f.get_tensor("w")
        assert "tensorinit" in (f.metadata() or {})
    assert w.dtype == torch.bfloat16
    assert w.view(torch.int16).numpy().tobytes() == expected("he_normal", (300, 200), seed=2, dtype="bfloat16", name="w").tobytes()


@pytest.mark.anyio
async def test_async_twin_covers_every_method(live_url: str, tmp_path: Path) -> None:
    async with AsyncClient(live_url) as client:
        got = await client.init("glorot_normal", (12, 6), name="weight", seed=8, dtype="bfloat16", verify=True)
        assert got.tobytes() == expected("glorot_normal", (12, 6), seed=8, dtype="bfloat16").tobytes()
        as_torch = await client.init("glorot_normal", (12, 6), name="weight", seed=8, framework="torch")
        assert as_torch.numpy().tobytes() == expected("glorot_normal", (12, 6), seed=8).tobytes()
        many = await client.init_many({"x": {"scheme": "ones", "shape": [3]}}, dtype="float64")
        assert many["x"].tolist() == [1.0, 1.0, 1.0]
        sd = await client.init_state_dict({"0.weight": (4, 3), "0.bias": (4,)}, RULES, seed=5)
        assert sd["0.weight"].tobytes() == expected("glorot_uniform", (4, 3), seed=5, name="0.weight").tobytes()
        linear = torch.nn.Linear(3, 4)
        assert await client.init_module(torch.nn.Sequential(linear), RULES, seed=5) == ["0.weight", "0.bias"]
        assert linear.weight.detach().numpy().tobytes() == sd["0.weight"].tobytes()
        stats = await client.stats("zeros", (4,), name="b")
        assert stats["b"].empirical.max == 0
        assert (await client.schemes())["schemes"]
        assert (await client.schemes("xavier_uniform"))["name"] == "glorot_uniform"
        assert (await client.version())["algorithm"] == ALGORITHM_VERSION
        path = await client.download({"scheme": "ones", "shape": [5], "name": "o"}, tmp_path / "o.safetensors", verify=True)
        with safe_open(str(path), framework="np") as f:
            assert f.get_tensor("o").tolist() == [1.0] * 5
        with pytest.raises(NotFound):
            await client.schemes("nope")


def test_api_key_is_sent_and_a_wrong_one_is_an_authentication_error(keyed_url: str) -> None:
    assert httpx.get(f"{keyed_url}/version").status_code == 401  # keys are enforced: a skip here would hide a regression
    with Client(keyed_url, api_key=API_KEY) as client:
        assert client.init("ones", (2,), name="o").tolist() == [1.0, 1.0]
    with Client(keyed_url, api_key="wrong", max_retries=0) as client, pytest.raises(AuthenticationError) as info:
        client.version()
    assert info.value.status_code == 401


def test_init_with_a_slice_is_that_slice_of_the_whole(client: Client) -> None:
    whole = client.init("he_normal", (64, 32), name="weight", seed=4)
    part = client.init("he_normal", (64, 32), name="weight", seed=4, slice="16:32,:", verify=True)
    assert part.shape == (16, 32) and part.tobytes() == whole[16:32].tobytes()


def test_two_ranks_fill_their_shards_and_together_hold_the_unsharded_module(client: Client) -> None:
    """A tensor-parallel pair: each rank's Linear holds half the rows of fc.weight (a row-sharded layer)."""
    rules = [("weight", "he_uniform"), ("bias", "zeros")]
    whole = torch.nn.Linear(16, 8)
    client.init_module(whole, rules, seed=9)
    halves = []
    for rank in range(2):
        local = torch.nn.Linear(16, 4)  # 4 of the 8 output rows
        shard = {"weight": ((8, 16), f"{4 * rank}:{4 * rank + 4},:"), "bias": ((8,), f"{4 * rank}:{4 * rank + 4}")}
        assert client.init_module(local, rules, seed=9, shard=shard) == ["weight", "bias"]
        halves.append(local.weight.detach())
    assert torch_bytes(torch.cat(halves)) == torch_bytes(whole.weight)
    with pytest.raises(ValueError, match="does not have"):
        client.init_module(whole, rules, shard={"missing": ((1,), ":")})
