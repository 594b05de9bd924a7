"""The I/O-free parts: safetensors parsing, rules, error mapping, retry decisions, stats."""

from __future__ import annotations

import email.utils
import importlib.util
import inspect
import io
import json
import time
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import save
from tensorinit import (
    APIError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    IntegrityError,
    NoMatchingRuleError,
    NotFound,
    PayloadTooLarge,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Stats,
    TensorinitError,
    ValidationError,
)
from tensorinit._errors import from_response
from tensorinit._progress import Progress
from tensorinit._retry import parse_retry_after
from tensorinit._rules import batch
from tensorinit._safetensors import build, digests_of_buffer, digests_of_file, parse_header, read_file_header


def _body() -> bytes:
    g = torch.Generator().manual_seed(0)
    return save(
        {
            "w": torch.randn(7, 5, generator=g).to(torch.bfloat16),
            "b": torch.randn(5, generator=g),
            "h": torch.randn(3, 2, generator=g).half(),
            "d": torch.randn(2, generator=g).double(),
            "e": torch.zeros(0, 4),
        },
        metadata={"tensorinit": "{}"},
    )


def test_numpy_views_match_safetensors_torch_loader_including_bf16() -> None:
    raw = _body()
    buf = bytearray(raw)
    header = parse_header(buf, len(buf))
    arrays = build(buf, header, "numpy")
    tensors = build(buf, header, "torch")
    from safetensors.torch import load

    reference = load(raw)
    assert arrays["w"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert tensors["w"].dtype == torch.bfloat16
    for name, ref in reference.items():
        assert tuple(arrays[name].shape) == tuple(ref.shape)
        ref_bytes = (ref.view(torch.int16) if ref.dtype == torch.bfloat16 else ref).numpy().tobytes()
        assert arrays[name].tobytes() == ref_bytes
        assert torch.equal(tensors[name], ref)
    # Zero copy: the arrays are views of the receive buffer.
    assert np.shares_memory(arrays["b"], np.frombuffer(buf, np.uint8))
    assert header.metadata == {"tensorinit": "{}"}
    assert digests_of_buffer(buf, header) == digests_of_file(io.BytesIO(raw), read_file_header(io.BytesIO(raw), len(raw)))


def _rewrite(raw: bytes, edit: Any) -> bytes:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (_body()[:-3], "data ends at byte"),
        (_body() + b"\0\0", "data ends at byte"),
        (_body()[:5], "shorter than the 8-byte"),
        ((10**9).to_bytes(8, "little") + b"{}", "exceeds"),
        (b"\x10" + b"\0" * 7 + b"not json at all!", "not JSON"),
        (_rewrite(_body(), lambda h: h["b"].update(dtype="F64")), "do not hold"),
        (_rewrite(_body(), lambda h: h["b"].update(dtype="Q8")), "unsupported dtype"),
        (_rewrite(_body(), lambda h: h.update(x={"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})), "hole or overlap"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(IntegrityError, match=match):
        parse_header(body, len(body))


def test_rules_first_match_wins_none_skips_unmatched_is_named() -> None:
    shapes = {"enc.0.weight": (4, 3), "enc.0.bias": (4,), "head.weight": (2, 4), "bn.num_batches_tracked": ()}
    rules = {"head.weight": {"scheme": "normal", "std": 0.02}, "*.weight": "he_uniform", "*.bias": "zeros", "*.num_batches_tracked": None}
    got = batch(shapes, rules, {"enc.0.bias": "bfloat16"})
    assert got == {
        "enc.0.weight": {"scheme": "he_uniform", "shape": [4, 3]},
        "enc.0.bias": {"scheme": "zeros", "shape": [4], "dtype": "bfloat16"},
        "head.weight": {"scheme": "normal", "std": 0.02, "shape": [2, 4]},
    }
    with pytest.raises(NoMatchingRuleError, match=r"'enc\.0\.bias'") as info:
        batch(shapes, [("*.weight", "ones")])
    assert isinstance(info.value, TensorinitError) and info.value.patterns == ["*.weight"]
    with pytest.raises(ValueError, match="no 'shape'"):
        batch(shapes, [("*", {"scheme": "ones", "shape": [1]})])


def _response(
    status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None
) -> tuple[httpx.Response, bytes]:
    content = text.encode() if text is not None else json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers), content


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFound),
        (413, PayloadTooLarge),
        (422, ValidationError),
        (500, ServerError),
        (502, ServerError),
        (503, ServiceUnavailable),
        (405, APIError),
    ],
)
def test_one_error_class_per_status(status: int, cls: type[APIError]) -> None:
    response, content = _response(status, {"type": "https://tensorinit.dev/problems/x-y", "title": "T", "status": status, "detail": "d"})
    err = from_response(response, content, None)
    assert type(err) is cls and err.code == "x-y" and err.status_code == status and isinstance(err, TensorinitError)


def test_validation_error_keeps_paths_allowed_values_and_suggestions() -> None:
    problem = {
        "type": "https://tensorinit.dev/problems/unknown-scheme",
        "title": "Unknown scheme",
        "status": 422,
        "detail": "scheme: unknown scheme 'he_nromal'",
        "request_id": "r1",
        "suggestions": ["he_normal"],
        "errors": [{"path": ["tensors", "fc1.weight", "gain"], "message": "must be > 0", "allowed": "a number > 0"}],
    }
    err = from_response(*_response(422, problem), None)
    assert isinstance(err, ValidationError)
    assert err.errors[0].path == ("tensors", "fc1.weight", "gain") and err.errors[0].allowed == "a number > 0"
    assert err.suggestions == ("he_normal",) and err.request_id == "r1"
    assert "tensors.fc1.weight.gain: must be > 0 (allowed: a number > 0)" in str(err)


def test_a_non_problem_body_becomes_a_bounded_detail() -> None:
    err = from_response(*_response(502, text="<html>" + "x" * 2000), None)
    assert isinstance(err, ServerError) and err.detail is not None and len(err.detail) == 500


def test_retry_policy_decisions() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay=0.5, max_delay=2.0, max_retry_after=60)
    for failures in range(1, 8):
        delay = policy.backoff(failures)
        ceiling = min(2.0, 0.5 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert policy.delay_for_status(503, 7.0, 1) == 7.0
    assert policy.delay_for_status(503, 120.0, 1) is None
    assert policy.delay_for_status(422, None, 1) is None
    assert policy.delay_for_status(500, None, 1) is None
    assert policy.delay_for_status(504, None, 4) is None
    assert policy.delay_for_transport(3) is not None and policy.delay_for_transport(4) is None


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after(httpx.Response(503, headers={"Retry-After": "12"})) == 12.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (parse_retry_after(httpx.Response(503, headers={"Retry-After": future})) or 0) <= 30
    assert parse_retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Response(503)) is None


def test_stats_parses_the_contract_example_and_tolerates_new_keys() -> None:
    raw = {
        "algorithm": 1,
        "etag": '"e"',
        "future": True,
        "tensors": {
            "weight": {
                "spec": {"fan_in": 3},
                "sha256": "ab",
                "empirical": {
                    "count": 0,
                    "mean": None,
                    "std": None,
                    "min": None,
                    "max": None,
                    "histogram": {"edges": [0, 1], "counts": [0], "below": 0, "above": 0},
                    "ks": None,
                    "orthogonality_error": None,
                    "new": 1,
                },
                "theory": {"mean": 0, "std": 1, "support": [None, 2]},
            }
        },
    }
    stats = Stats.from_json(raw)
    w = stats["weight"]
    assert stats.sha256 == {"weight": "ab"} and w.spec == {"fan_in": 3}
    assert w.empirical.mean is None and w.empirical.ks is None and w.empirical.histogram is not None
    assert w.theory.support == (None, 2.0)


def test_progress_callback_sees_every_step() -> None:
    calls: list[tuple[int, int | None]] = []
    bar = Progress(lambda n, total: calls.append((n, total)), "x")
    bar.start(10, 0)
    bar.update(4, 10)
    bar.update(10, 10)
    bar.close()
    assert calls == [(0, 10), (4, 10), (10, 10)]


def test_progress_is_off_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress(None, "x")
    bar.start(64 << 20, 0)
    bar.update(64 << 20, 64 << 20)
    bar.close()
    assert capsys.readouterr().err == ""


def test_forced_progress_without_tqdm_draws_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("tqdm") is not None:
        pytest.skip("tqdm is installed: the bar is tqdm's, not the fallback line")
    bar = Progress(True, "w.safetensors")
    bar.start(2 << 20, 0)
    bar.update(2 << 20, 2 << 20)
    bar.close()
    err = capsys.readouterr().err
    assert "w.safetensors: 2.0 MiB 100.0%" in err and err.endswith("\n")


def test_the_async_twin_has_the_same_public_methods_and_signatures() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(f) for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}

    sync, asyncs = public(Client), public(AsyncClient)
    assert (
        set(sync)
        == set(asyncs)
        >= {"init", "init_many", "init_state_dict", "init_module", "stats", "schemes", "version", "download", "close"}
    )
    for name, sig in sync.items():
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert list(sig.parameters) == list(asyncs[name].parameters), name
        assert str(sig.return_annotation) == str(asyncs[name].return_annotation), name


def test_init_module_refuses_a_meta_module_before_any_request() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with Client("http://127.0.0.1:9", max_retries=0) as client, pytest.raises(ValueError, match="meta device"):
        client.init_module(model, [("*", "zeros")])


def test_base_url_and_api_key_from_arguments_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENSORINIT_URL", raising=False)
    monkeypatch.delenv("TENSORINIT_API_KEY", raising=False)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8000" and "Authorization" not in client.headers
    monkeypatch.setenv("TENSORINIT_URL", "http://10.0.0.5:9000/")
    monkeypatch.setenv("TENSORINIT_API_KEY", "k1")
    with Client() as client:
        assert client.base_url == "http://10.0.0.5:9000" and client.headers["Authorization"] == "Bearer k1"
    with Client("http://h:1", api_key="k2") as client:
        assert client.base_url == "http://h:1" and client.headers["Authorization"] == "Bearer k2"
