"""No 5xx from /propagation or the pictures, whatever the numbers: issue 17's rows, then hypothesis over the parameter space.

Each row of issue 17 answered 500 and uvicorn then closed the connection, which reset the
client's next pipelined request. They are asked of the real server, followed on the same
connection by a request that must still be answered. Hypothesis then draws bodies and queries
from the whole parameter space with extreme numbers (±1e308, 1e-308, subnormals, 0, ±0,
NaN and infinities, huge integers), in process, and every answer must be below 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.api.app import create_app
from service.api.settings import Settings
from service.core import SCHEMES
from service.core.propagation import ACTIVATIONS
from tests.conftest import LiveServer

SMALL = {"depth": 3, "width": 8, "activation": "relu", "init": "he_normal", "batch": 4}

# (method, path, body, Accept, status, the field named (422) or the picture's media type (200))
ROWS: list[tuple[str, str, dict[str, Any] | None, str, int, str]] = [
    ("POST", "/propagation", {**SMALL, "residual": {"multiplier": 1e200}}, "application/json", 422, "multiplier"),
    ("POST", "/propagation", {**SMALL, "activation": {"name": "elu", "alpha": 1e308}}, "application/json", 422, "alpha"),
    ("POST", "/propagation", {**SMALL, "init": "zeros"}, "image/png", 200, "image/png"),
    ("POST", "/propagation", {**SMALL, "init": "zeros"}, "image/svg+xml", 200, "image/svg+xml"),
    ("GET", "/stats?scheme=zeros&shape=0,5", None, "image/svg+xml", 200, "image/svg+xml"),
    ("GET", "/stats?scheme=zeros&shape=4", None, "image/png", 200, "image/png"),
]


@pytest.mark.parametrize(("method", "path", "body", "accept", "status", "what"), ROWS)
def test_issue_17_rows(live_server: LiveServer, method: str, path: str, body: Any, accept: str, status: int, what: str) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        r = client.request(method, path, json=body, headers={"Accept": accept})
        assert r.status_code == status, r.text[:300]
        if status == 422:
            problem = r.json()
            assert problem["errors"][0]["path"][-1] == what
            assert what in problem["detail"]
        else:
            assert r.headers["content-type"] == what
            assert r.content.startswith(b"<?xml" if what == "image/svg+xml" else b"\x89PNG")
        # The connection was kept: the next request on it is answered.
        assert client.get("/healthz").status_code == 200
        assert r.headers.get("connection", "keep-alive") != "close"


# -- hypothesis: the whole parameter space, extreme numbers included ----------------------------

EXTREMES = [1e308, 1.7976931348623157e308, 1e-308, 2.2250738585072014e-308, 5e-324, 1e-320, 1e200, 1e150, 1e-150, 1e38, 3.5e38, 65504.0]
EXTREME_FLOATS = st.sampled_from([*EXTREMES, *(-x for x in EXTREMES), 0.0, -0.0, math.inf, -math.inf, math.nan])
HUGE_INTS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([10**30, -(10**30), 2**64, 2**63]))


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any], weight: int = 5) -> st.SearchStrategy[Any]:
    """``valid`` about ``weight`` times as often as ``other``: every field may be wrong, but most bodies reach the arithmetic."""
    return st.sampled_from([True] * weight + [False]).flatmap(lambda ok: valid if ok else other)


# Numbers a scheme takes, an extreme one often, and now and then anything.
NUMBERS = _mostly(
    st.one_of(st.floats(min_value=0.01, max_value=10.0), st.sampled_from([*EXTREMES, 0.0])),
    st.one_of(EXTREME_FLOATS, st.floats(), HUGE_INTS),
    3,
)
ANY_VALUE = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=3), st.lists(st.integers(-2, 2), max_size=2))
PARAMS = {s.name: s.params for s in SCHEMES.values()}
SIZES = _mostly(st.integers(min_value=1, max_value=6), st.sampled_from([0, -1, 2**64, 10**30, 1.5, 4.0, "8", None]), 16)


@st.composite
def scheme_specs(draw: st.DrawFn) -> Any:
    name = draw(st.sampled_from(sorted(PARAMS)))
    params = draw(st.lists(st.sampled_from(PARAMS[name]), unique_by=lambda p: p.name, max_size=2)) if PARAMS[name] else []
    if not params and draw(st.booleans()):
        return name
    values = {}
    for p in params:
        if p.choices is not None:
            values[p.name] = draw(_mostly(st.sampled_from(p.choices), ANY_VALUE, 16))
        else:
            values[p.name] = draw(_mostly(NUMBERS, ANY_VALUE, 16))
    return {"scheme": name, **values}


ACTIVATION = st.one_of(
    st.sampled_from(ACTIVATIONS),
    st.builds(lambda a: {"name": "leaky_relu", "slope": a}, NUMBERS),
    st.builds(lambda a: {"name": "elu", "alpha": a}, NUMBERS),
)
RESIDUAL = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"multiplier": NUMBERS, "norm": st.sampled_from([None, "layer"])}))
RECIPES = st.one_of(
    st.just({"recipe": "torch"}),
    st.builds(lambda n: {"recipe": "gpt2", "recipe_params": {"n_layer": n}}, SIZES),
    st.builds(lambda n: {"recipe": "fixup", "recipe_params": {"num_layers": n}}, SIZES),
)
INIT = _mostly(scheme_specs(), RECIPES, 4)


@st.composite
def propagation_bodies(draw: st.DrawFn) -> dict[str, Any]:
    width = draw(st.integers(min_value=1, max_value=8))
    body: dict[str, Any] = {"activation": draw(ACTIVATION), "init": draw(INIT), "batch": draw(SIZES)}
    spatial = draw(st.sampled_from([[], [3], [3, 3]]))
    kernel = [draw(st.sampled_from([1, 3])) for _ in spatial]
    if draw(st.booleans()):
        body |= {"depth": draw(SIZES), "width": width}
    else:
        layer = st.fixed_dictionaries(
            {"width": st.just(width)},
            optional={"activation": ACTIVATION, "init": INIT, "bias": st.one_of(st.none(), scheme_specs()), "residual": RESIDUAL},
        )
        body["layers"] = [{**row, "kernel": kernel} for row in draw(st.lists(layer, min_size=1, max_size=3))]
    if spatial:
        body["spatial"] = spatial
        if "depth" in body:
            body.pop("depth")
            body["layers"] = [{"width": width, "kernel": kernel}] * 2
            body.pop("width")
    optional = {
        "bias": st.one_of(st.none(), scheme_specs()),
        "residual": RESIDUAL,
        "input_variance": NUMBERS,
        "seed": _mostly(st.integers(0, 2**64 - 1), NUMBERS, 16),
        "dtype": st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
        "convention": st.sampled_from(["torch", "keras", "jax"]),
        "compare": st.lists(INIT, min_size=1, max_size=2),
        "measure": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The app in process, its errors answered as the server answers them (500), not raised."""
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as c:
        yield c


def _post(client: TestClient, body: dict[str, Any], accept: str) -> Any:
    # allow_nan: NaN and Infinity are sent as Python writes them; the service must refuse them, not fail.
    return client.post("/propagation", content=json.dumps(body), headers={"Content-Type": "application/json", "Accept": accept})


QUICK = hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
PICTURES = hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@QUICK
@hypothesis.given(body=propagation_bodies(), accept=st.sampled_from(["application/json", "text/plain"]))
def test_propagation_never_5xx(client: TestClient, body: dict[str, Any], accept: str) -> None:
    r = _post(client, body, accept)
    assert r.status_code < 500, (body, r.text[:500])


@PICTURES
@hypothesis.given(body=propagation_bodies(), accept=st.sampled_from(["image/svg+xml", "image/png"]))
def test_propagation_pictures_never_5xx(client: TestClient, body: dict[str, Any], accept: str) -> None:
    r = _post(client, {**body, "measure": False}, accept)
    assert r.status_code < 500, (body, r.text[:500])


@st.composite
def stats_queries(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(scheme_specs())
    query = {"scheme": spec} if isinstance(spec, str) else dict(spec)
    dims = draw(st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=3))
    query["shape"] = ",".join(map(str, dims))
    for key, strategy in {
        "bins": st.one_of(st.integers(min_value=1, max_value=64), NUMBERS),
        "dtype": st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
        "convention": st.sampled_from(["torch", "keras", "jax"]),
        "seed": NUMBERS,
    }.items():
        if draw(st.booleans()):
            query[key] = draw(strategy)
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in query.items()}


@PICTURES
@hypothesis.given(query=stats_queries(), accept=st.sampled_from(["image/svg+xml", "image/png", "text/plain"]))
def test_stats_pictures_never_5xx(client: TestClient, query: dict[str, str], accept: str) -> None:
    r = client.get("/stats", params=query, headers={"Accept": accept})
    assert r.status_code < 500, (query, r.text[:500])
