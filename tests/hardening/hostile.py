"""The hostile-input corpus: one row per request, with the answer it must get.

Each row is a request that a careless or malicious client could send, and the status
and problem type the service must answer with. ``slug=None`` marks rows the HTTP
semantics say to ignore (a Range in an unknown unit, RFC 9110 §14.2; an If-Range that
is not our ETag, §13.1.5; a valid If-None-Match list that does not match): those must
be answered with the complete, correct file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20
SMALL = {"scheme": "he_normal", "shape": [16, 8]}
SMALL_QUERY = "scheme=he_normal&shape=16,8"
CONFIG_HEAD = (
    b'{"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,'
    b' "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1'
)


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the answer it must get."""

    id: str
    method: str
    path: str
    status: int
    slug: str | None
    json_body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes | None:
        if self.content is not None:
            return self.content
        if self.json_body is not None:
            return json.dumps(self.json_body, allow_nan=True).encode()
        return None

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.method == "POST" and self.content is None:
            headers.setdefault("Content-Type", "application/json")
        return headers


def _single(**fields: Any) -> dict[str, Any]:
    return {**SMALL, **fields}


def _post(id: str, status: int, slug: str | None, body: Any, path: str = "/init") -> Hostile:
    return Hostile(id, "POST", path, status, slug, json_body=body)


def _raw(
    id: str, status: int, slug: str | None, content: bytes, content_type: str | None = "application/json", path: str = "/init"
) -> Hostile:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return Hostile(id, "POST", path, status, slug, content=content, headers=headers)


def _get(id: str, status: int, slug: str | None, query: str, path: str = "/init", headers: dict[str, str] | None = None) -> Hostile:
    return Hostile(id, "GET", f"{path}?{query}", status, slug, headers=headers or {})


def _nested(depth: int) -> bytes:
    return b'{"scheme": "zeros", "shape": ' + b"[" * depth + b"]" * depth + b"}"


def _batch(names: list[str], **defaults: Any) -> dict[str, Any]:
    return {**defaults, "tensors": {n: {"scheme": "zeros", "shape": [2]} for n in names}}


def _range(id: str, value: str, status: int = 200, slug: str | None = None) -> Hostile:
    return Hostile(id, "GET", f"/init?{SMALL_QUERY}", status, slug, headers={"Range": value})


CORPUS: list[Hostile] = [
    # -- shapes ------------------------------------------------------------------
    _post("shape-overflow-64bit", 413, "limit-exceeded", _single(shape=[2**32, 2**32, 2**32])),
    _post("shape-dim-2^64", 413, "limit-exceeded", _single(shape=[2**64, 2])),
    _post("shape-dim-2^200", 413, "limit-exceeded", _single(shape=[2, 2**200])),
    _post("shape-invalid-and-too-large", 422, "validation-error", _single(shape=[2**64])),  # wrong before too large
    _post("shape-product-wraps-to-zero", 413, "limit-exceeded", _single(shape=[2**32, 2**32])),
    _post("shape-negative", 422, "validation-error", _single(shape=[-1, 4])),
    _post("shape-float", 422, "validation-error", _single(shape=[2.5, 4])),
    _post("shape-float-huge", 413, "limit-exceeded", _single(shape=[1e300, 4])),  # JSON: 1e300 is an integer
    _post("shape-bool", 422, "validation-error", _single(shape=[True, 4])),
    _post("shape-string", 422, "validation-error", _single(shape=["4", 4])),
    _post("shape-null-dim", 422, "validation-error", _single(shape=[None, 4])),
    _post("shape-null", 422, "validation-error", _single(shape=None)),
    _post("shape-number-not-list", 422, "validation-error", _single(shape=16)),
    _post("shape-1000-dims", 422, "validation-error", _single(shape=[1] * 1000)),  # max_dims is stated in the document: 422
    _post("shape-nested-list", 422, "validation-error", _single(shape=[[4], [4]])),
    _get("get-shape-garbage", 422, "validation-error", "scheme=he_normal&shape=a,b"),
    _get("get-shape-negative", 422, "validation-error", "scheme=he_normal&shape=-3,4"),
    _get("get-shape-overflow", 413, "limit-exceeded", "scheme=he_normal&shape=99999999999999999999999,2"),
    _get("get-shape-fans-past-float", 413, "limit-exceeded", f"scheme=glorot_normal&shape={10**200},{10**200}"),
    _post("shape-empty-unholdable", 422, "validation-error", _single(shape=[0, 2**62, 2**62])),
    # -- seeds -------------------------------------------------------------------
    _post("seed-empty-string", 422, "validation-error", _single(seed="")),
    _post("seed-2^64", 422, "validation-error", _single(seed=2**64)),
    _post("seed-2^1000", 422, "validation-error", _single(seed=2**1000)),
    _post("seed-negative", 422, "validation-error", _single(seed=-1)),
    _post("seed-float", 422, "validation-error", _single(seed=1.5)),
    _post("seed-string", 422, "validation-error", _single(seed="42")),
    _post("seed-bool", 422, "validation-error", _single(seed=True)),
    _get("get-seed-huge", 422, "validation-error", f"{SMALL_QUERY}&seed={'9' * 5000}"),
    _get("get-seed-float", 422, "validation-error", f"{SMALL_QUERY}&seed=1e3"),
    # -- NaN and Infinity (JSON extensions) and other numbers ---------------------
    _raw("nan-gain", 400, "malformed-json", b'{"scheme": "he_normal", "shape": [4, 4], "gain": NaN}'),
    _raw("infinity-gain", 400, "malformed-json", b'{"scheme": "he_normal", "shape": [4, 4], "gain": Infinity}'),
    _raw("neg-infinity-std", 400, "malformed-json", b'{"scheme": "normal", "shape": [4], "std": -Infinity}'),
    _raw("overflowing-float-std", 422, "validation-error", b'{"scheme": "normal", "shape": [4], "std": 1e400}'),
    _get("get-nan-gain", 422, "validation-error", f"{SMALL_QUERY}&gain=nan"),
    # A checkpoint's config is free-form JSON written back as its config.json: a number JSON cannot
    # hold, in any field (read by the architecture or not), is refused: NaN and Infinity by the JSON
    # reader as in /init's body (400), 1e400 (read as inf) named (422).
    *(
        _raw(f"config-{label}-{kind}", status, slug, b'{"config": ' + CONFIG_HEAD + field + b"}}", path=path)
        for label, field, status, slug in (
            ("nan-unused-field", b', "rope_theta": NaN', 400, "malformed-json"),
            ("overflowing-std", b', "initializer_range": 1e400', 422, "validation-error"),
            ("overflowing-nested", b', "rope_scaling": {"factor": -1e400}', 422, "validation-error"),
            ("nested-infinity", b', "rope_scaling": {"factor": -Infinity}', 400, "malformed-json"),
            ("nan-in-a-list", b', "layer_types": ["full", NaN]', 400, "malformed-json"),
            # An integer past float64 where a float is read, or past int64 where a size is: named, not a 500
            # at the float conversion of a std (GPT-2's 1/√(2·n_layer), T5's (d_model·d_kv)^-½).
            ("integer-std-10^400", b', "initializer_range": 1' + b"0" * 400, 422, "validation-error"),
            ("layers-10^400", b', "num_hidden_layers": 1' + b"0" * 400, 422, "validation-error"),
            # A lone surrogate (JSON's \ud800) no UTF-8 config.json can hold: named, not a 500 at the commit's hash.
            ("lone-surrogate", b', "x": "\\ud800"', 422, "validation-error"),
            ("lone-surrogate-key", b', "\\ud800": 1', 422, "validation-error"),
            # Nested past what the plan's JSON encoder writes back (it echoes the config): named, not a 500.
            ("nested-300", b', "x": ' + b'{"a": ' * 300 + b"1" + b"}" * 300, 422, "validation-error"),
        )
        for kind, path in (("plan", "/checkpoint"), ("file", "/checkpoint/model.safetensors"), ("manifest", "/models/manifest"))
        if kind != "manifest" or "10^400" in label  # the manifest echoes no config, and reads no unused field
    ),
    *(
        _post(f"config-{label}", 422, "validation-error", {"config": config}, path=path)
        for label, config, path in (
            ("gpt2-n_layer-10^400", {"model_type": "gpt2", "n_layer": 10**400}, "/checkpoint"),
            ("t5-d_kv-10^400-manifest", {"model_type": "t5", "d_kv": 10**400}, "/models/manifest"),
            ("t5-d_ff-10^400", {"model_type": "t5", "d_ff": 10**400}, "/checkpoint"),
        )
    ),
    # The checkpoint routes read their body as /init does: bounded by max_body_bytes, JSON only.
    _raw("checkpoint-body-8MB", 413, "body-too-large", b'{"model": "gpt2", "x": "' + b"a" * (8 * MiB) + b'"}', path="/checkpoint"),
    _raw(
        "checkpoint-file-body-8MB",
        413,
        "body-too-large",
        b'{"model": "gpt2", "x": "' + b"a" * (8 * MiB) + b'"}',
        path="/checkpoint/config.json",
    ),
    _raw("checkpoint-body-text", 415, "unsupported-media-type", b'{"model": "gpt2"}', "text/plain", path="/checkpoint"),
    # Query integers past int()'s 4300 digits: 422, not a 500.
    *(
        _get(f"checkpoint-{name}-5000-digits", 422, "validation-error", f"{name}={'9' * 5000}", path="/models/gpt2/checkpoint")
        for name in ("seed", "algorithm", "max_shard_size")
    ),
    _get("hub-tree-negative-cursor", 422, "validation-error", "cursor=-1", path="/api/models/tensorinit/gpt2/tree/main"),
    _get("get-inf-gain", 422, "validation-error", f"{SMALL_QUERY}&gain=inf"),
    _post("negative-std", 422, "validation-error", {"scheme": "normal", "shape": [4], "std": -1.0}),
    _post("gain-zero-truncated", 422, "validation-error", {"scheme": "lecun_normal", "shape": [4, 4], "gain": 0, "truncated": True}),
    _post("gain-zero-stats", 422, "validation-error", {"scheme": "he_uniform", "shape": [4, 4], "gain": 0}, path="/stats"),
    _post("denormal-std", 422, "validation-error", {"scheme": "normal", "shape": [4], "std": 5e-324}),
    _post("negative-slope-1e200", 422, "validation-error", {"scheme": "he_normal", "shape": [4, 4], "negative_slope": 1e200}),
    _post("mean-beyond-float16", 422, "validation-error", {"scheme": "normal", "shape": [4], "dtype": "float16", "mean": 3.4e38}),
    _post(
        "std-squares-overflow", 422, "validation-error", {"scheme": "normal", "shape": [4], "dtype": "float64", "std": 1e300}, path="/stats"
    ),
    # -- schemes and parameters ----------------------------------------------------
    _post("unknown-scheme", 422, "unknown-scheme", _single(scheme="he_normall")),
    _post("scheme-empty", 422, "unknown-scheme", _single(scheme="")),
    _post("scheme-not-string", 422, "unknown-scheme", _single(scheme=7)),
    _post("scheme-missing", 422, "validation-error", {"shape": [4]}),
    _post("unknown-parameter", 422, "unknown-parameter", _single(gainn=2.0)),
    _post("param-of-other-scheme", 422, "unknown-parameter", _single(std=0.1)),
    _post("dtype-unknown", 422, "validation-error", _single(dtype="float128")),
    _post("convention-unknown", 422, "validation-error", _single(convention="caffe")),
    _get("get-unknown-scheme", 422, "unknown-scheme", "scheme=glorot_normall&shape=4,4"),
    _get("get-unknown-param", 422, "unknown-parameter", f"{SMALL_QUERY}&evil=1"),
    _get("get-no-scheme", 422, "validation-error", "shape=4,4"),
    # -- the body itself -------------------------------------------------------------
    _raw("deeply-nested-json", 400, "malformed-json", _nested(100_000)),
    _raw("nesting-1000", 400, "malformed-json", _nested(1000)),
    _raw("nesting-100-in-shape", 422, "validation-error", _nested(100)),
    _raw("body-50MB", 413, "body-too-large", b'{"scheme": "zeros", "shape": [1], "name": "' + b"a" * (50 * MiB) + b'"}'),
    _raw("body-not-json", 400, "malformed-json", b"scheme=he_normal&shape=4"),
    _raw("body-empty", 400, "malformed-json", b""),
    _raw("body-truncated", 400, "malformed-json", b'{"scheme": "he_normal", "shape": [4,'),
    _raw("body-array", 422, "validation-error", b"[1, 2, 3]"),
    _raw("body-null", 422, "validation-error", b"null"),
    _raw("body-string", 422, "validation-error", b'"he_normal"'),
    _raw("invalid-utf8", 400, "malformed-json", b'{"scheme": "he_normal", "shape": [4], "name": "\xff\xfe\xc3("}'),
    _raw("lone-surrogate-name", 422, "validation-error", b'{"scheme": "zeros", "shape": [1], "name": "\\ud800"}'),
    _raw("content-type-text", 415, "unsupported-media-type", json.dumps(SMALL).encode(), "text/plain"),
    _raw("content-type-form", 415, "unsupported-media-type", b"scheme=he_normal", "application/x-www-form-urlencoded"),
    _raw("content-type-multipart", 415, "unsupported-media-type", b"--x--", "multipart/form-data; boundary=x"),
    _raw("content-type-xml", 415, "unsupported-media-type", b"<init/>", "application/xml"),
    _raw("duplicate-keys", 422, "validation-error", b'{"scheme": "zeros", "shape": [1], "shape": "x"}'),
    # -- tensor names ----------------------------------------------------------------
    _post("name-empty", 422, "validation-error", _single(name="")),
    _post("name-10kB", 422, "validation-error", _single(name="n" * 10_000)),
    _post("name-control-chars", 422, "validation-error", _single(name="fc1\x00weight")),
    _post("name-newline", 422, "validation-error", _single(name="a\nb")),
    _post("name-metadata", 422, "validation-error", _single(name="__metadata__")),
    _post("batch-name-metadata", 422, "validation-error", _batch(["__metadata__"])),
    _post("batch-name-empty", 422, "validation-error", _batch([""])),
    _post("batch-duplicate-after-nfc", 422, "validation-error", _batch(["caf\u00e9", "cafe\u0301"])),
    _post("batch-name-not-object", 422, "validation-error", {"tensors": {"a": 5}}),
    _post("batch-empty", 422, "validation-error", {"tensors": {}}),
    _post("batch-name-field-conflict", 422, "unknown-parameter", {"tensors": {"a": {"scheme": "zeros", "shape": [1], "name": "b"}}}),
    # -- sizes -------------------------------------------------------------------------
    _post("batch-100000-tensors", 413, "body-too-large", _batch([f"t{i}" for i in range(100_000)])),
    _post("batch-2000-tensors", 413, "limit-exceeded", {"tensors": {f"{i}": {"scheme": "zeros", "shape": []} for i in range(2000)}}),
    _post("stats-bins-1e9", 413, "limit-exceeded", {**SMALL, "bins": 10**9}, path="/stats"),
    _post("stats-bins-zero", 422, "validation-error", {**SMALL, "bins": 0}, path="/stats"),
    _get("get-stats-bins-1e9", 413, "limit-exceeded", f"{SMALL_QUERY}&bins=1000000000", path="/stats"),
    _post("orthogonal-1e6x1e6", 413, "limit-exceeded", {"scheme": "orthogonal", "shape": [10**6, 10**6]}),
    _post("orthogonal-stats-1e6x1e6", 413, "limit-exceeded", {"scheme": "orthogonal", "shape": [10**6, 10**6]}, path="/stats"),
    _post("response-too-large", 413, "limit-exceeded", {"scheme": "zeros", "shape": [2**30, 2], "dtype": "float64"}),
    # -- Range: unsatisfiable, malformed, reversed, several, overflowing: 416; another unit ignored --
    _range("range-beyond-end", "bytes=100000000-", 416, "range-not-satisfiable"),
    _range("range-overflowing-start", "bytes=99999999999999999999999999-", 416, "range-not-satisfiable"),
    _range("range-suffix-zero", "bytes=-0", 416, "range-not-satisfiable"),
    _range("range-reversed", "bytes=500-100", 416, "range-not-satisfiable"),
    _range("range-multiple", "bytes=0-1,5-9", 416, "range-not-satisfiable"),
    _range("range-1000-ranges", "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)), 416, "range-not-satisfiable"),
    _range("range-negative", "bytes=-5-10", 416, "range-not-satisfiable"),
    _range("range-garbage", "bytes=abc", 416, "range-not-satisfiable"),
    _range("range-no-unit", "0-5", 416, "range-not-satisfiable"),
    _range("range-other-unit", "items=0-5"),  # RFC 9110 §14.2: an unknown unit MUST be ignored
    _range("range-empty", "bytes=", 416, "range-not-satisfiable"),
    _range("range-overflowing-end", f"bytes=0-{2**64}", 416, "range-not-satisfiable"),
    _range("range-8000-digits", "bytes=" + "9" * 8000 + "-", 416, "range-not-satisfiable"),
    _range("range-8000-digit-end", "bytes=5-" + "0" * 8000, 416, "range-not-satisfiable"),  # = bytes=5-0: reversed
    Hostile("if-range-garbage", "GET", f"/init?{SMALL_QUERY}", 200, None, headers={"Range": "bytes=0-9", "If-Range": "garbage"}),
    # -- If-None-Match garbage: 400, never a false 304 ----------------------------------
    Hostile("inm-garbage", "GET", f"/init?{SMALL_QUERY}", 400, "invalid-request", headers={"If-None-Match": "garbage"}),
    Hostile("inm-unterminated", "GET", f"/init?{SMALL_QUERY}", 400, "invalid-request", headers={"If-None-Match": '"abc'}),
    Hostile("inm-unquoted-list", "GET", f"/init?{SMALL_QUERY}", 400, "invalid-request", headers={"If-None-Match": "a, b, c"}),
    Hostile("inm-star-in-list", "GET", f"/init?{SMALL_QUERY}", 400, "invalid-request", headers={"If-None-Match": '"a", *'}),
    Hostile(
        "inm-many-tags", "GET", f"/init?{SMALL_QUERY}", 200, None, headers={"If-None-Match": ", ".join(f'"{i}"' for i in range(1000))}
    ),  # valid syntax, no match
    Hostile("inm-weak-wrong", "GET", f"/init?{SMALL_QUERY}", 200, None, headers={"If-None-Match": 'W/"0000"'}),
    # -- paths and methods ------------------------------------------------------------
    Hostile("unknown-path", "GET", "/etc/passwd", 404, "not-found"),
    Hostile("path-traversal", "GET", "/schemes/..%2f..%2fetc%2fpasswd", 404, "not-found"),
    Hostile("scheme-lookup-unknown", "GET", "/schemes/nope", 404, "not-found"),
    Hostile("method-delete", "DELETE", "/init", 405, "method-not-allowed"),
    Hostile("method-put-stats", "PUT", "/stats", 405, "method-not-allowed"),
]
