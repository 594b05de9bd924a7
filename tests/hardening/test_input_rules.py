"""Issue 17, item 5: nosniff on every answer, no bidirectional or other format characters in names, ASCII digits in queries.

Against a real uvicorn on loopback (the session's ``live_server``, default settings),
with the attacker's exact inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from service.api.app import create_app
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server

PROBLEM = "https://tensorinit.dev/problems/"

# -- X-Content-Type-Options: nosniff ------------------------------------------------------

ANSWERS = [
    ("GET", "/init?scheme=zeros&shape=4", None, 200),  # a streamed file (the template path)
    ("GET", "/init/he_normal?shape=4,4&seed=3", None, 200),
    ("HEAD", "/init?scheme=zeros&shape=4", None, 200),
    ("GET", "/init?scheme=zeros&shape=64", {"Range": "bytes=0-9"}, 206),
    ("POST", "/init", {"scheme": "zeros", "shape": [2]}, 200),
    ("GET", "/stats?scheme=ones&shape=4", None, 200),
    ("GET", "/schemes", None, 200),
    ("GET", "/openapi.json", None, 200),
    ("GET", "/docs", None, 200),
    ("GET", "/healthz", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/", None, 200),  # the page and its static files
    ("GET", "/static/page.js", None, 200),
    ("GET", "/static/<script>alert(1)</script>", None, 404),
    ("GET", "/<script>alert(1)</script>", None, 404),
    ("GET", "/init?scheme=<script>alert(1)</script>&shape=4", None, 422),  # problem+json echoing the input
    ("POST", "/init", b"<script>", 400),
    ("DELETE", "/init", None, 405),
    ("GET", "/stats?scheme=zeros&shape=4", {"Accept": "text/html"}, 406),
    ("GET", "/init?scheme=zeros&shape=65536,65536", None, 413),
]


@pytest.mark.parametrize(("method", "path", "extra", "status"), ANSWERS, ids=[f"{m} {p} {s}" for m, p, _, s in ANSWERS])
def test_every_answer_says_nosniff(live_http: httpx.Client, method: str, path: str, extra: Any, status: int) -> None:
    if method == "POST":
        content = extra if isinstance(extra, bytes) else None
        response = live_http.request(method, path, json=None if content else extra, content=content)
    else:
        response = live_http.request(method, path, headers=extra)
    assert response.status_code == status, response.text[:300]
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]


@pytest.fixture
def failing_server() -> Iterator[LiveServer]:
    """The app with one more route that fails: a 500 is answered by Starlette's outermost layer."""
    app = create_app(Settings())

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom)
    live = start_server(app)
    try:
        yield live
    finally:
        stop_server(live)


def test_a_500_says_nosniff(failing_server: LiveServer) -> None:
    response = httpx.get(failing_server.url + "/boom", timeout=30)
    assert response.status_code == 500
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.json()["request_id"] == response.headers["x-request-id"]


# -- names: no control, format (bidirectional, zero-width) or surrogate characters ----------

FORMAT_CHARACTERS = [
    "\u202a",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE: 'weight\u202egpj.exe'
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u2067",
    "\u2068",
    "\u2069",  # POP DIRECTIONAL ISOLATE
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u061c",  # ARABIC LETTER MARK
    "\u200b",  # ZERO WIDTH SPACE
    "\u2060",  # WORD JOINER
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\x1b",  # a control character, as before
]


@pytest.mark.parametrize("char", FORMAT_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("form", ["get", "post", "batch"])
def test_a_name_with_a_format_character_is_refused(live_http: httpx.Client, char: str, form: str) -> None:
    name = f"fc1{char}.weight"
    if form == "get":
        response = live_http.get("/init/zeros", params={"shape": "4", "name": name})
        path: list[Any] = ["name"]
    elif form == "post":
        response = live_http.post("/init", json={"scheme": "zeros", "shape": [4], "name": name})
        path = ["name"]
    else:
        response = live_http.post("/init", json={"tensors": {name: {"scheme": "zeros", "shape": [4]}}})
        path = ["tensors", name, "name"]
    assert response.status_code == 422, response.text[:300]
    problem = response.json()
    assert problem["type"] == PROBLEM + "validation-error"
    (error,) = problem["errors"]
    assert error["path"] == path and f"U+{ord(char):04X}" in error["allowed"]
    assert "content-disposition" not in response.headers


@pytest.mark.parametrize("name", ["fc1.weight", "βήτα", "层.权重", "e\u0301", "emoji\U0001f600"])
def test_names_without_them_still_serve(live_http: httpx.Client, name: str) -> None:
    response = live_http.get("/init/zeros", params={"shape": "4", "name": name})
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-disposition"].startswith("attachment; filename=")


# -- integers (and numbers) in a query: ASCII digits only --------------------------------------

# (path, parameter, value): every integer the GET forms take, spelled as Python's int() takes it.
ATTACKER = ["+7", " 7", "7_0", "\u0667"]  # the issue's, each taken by int(); the seed gets a few more
INTEGERS = [
    *[("/init/zeros?shape=4", "seed", value) for value in [*ATTACKER, "7 ", "\uff17", "0x7", "7\n"]],
    *[("/init/zeros", "shape", value) for value in ATTACKER],
    *[("/init/zeros", "shape", f"4,{value}") for value in ATTACKER],
    *[("/init/zeros?shape=4", "algorithm", value.replace("7", "2")) for value in ATTACKER],
    *[("/stats/zeros?shape=4", "bins", value) for value in ATTACKER],
    *[("/init/dirac?shape=4,4,3", "groups", value.replace("7", "1")) for value in ATTACKER],
    *[("/init/he_normal?shape=4,4&out_axes=0", "in_axes", value.replace("7", "1")) for value in ATTACKER],
    *[("/init/orthogonal?shape=4,4", "column_axis", value.replace("7", "1")) for value in ATTACKER],
    *[("/init/normal?shape=4", "std", value) for value in ["+1.5", " 1.5", "1_0.5", "\u0661.\u0665", "1.5\n"]],
]


@pytest.mark.parametrize(("path", "param", "value"), INTEGERS, ids=[f"{p.split('?')[0]} {q}={v!r}" for p, q, v in INTEGERS])
def test_a_query_number_takes_ascii_digits_only(live_http: httpx.Client, path: str, param: str, value: str) -> None:
    base, _, query = path.partition("?")
    response = live_http.get(base, params=[*parse_qsl(query), (param, value)])
    assert response.status_code == 422, response.text[:300]
    problem = response.json()
    assert problem["errors"][0]["path"][0] == param, problem


@pytest.mark.parametrize(
    ("query", "seed"),
    [("seed=7", 7), ("seed=007", 7), ("seed=18446744073709551615", 2**64 - 1), ("seed=0", 0)],
)
def test_plain_digits_still_work(live_http: httpx.Client, query: str, seed: int) -> None:
    response = live_http.get(f"/init/zeros?shape=4&{query}")
    assert response.status_code == 200, response.text[:300]
    direct = live_http.post("/init", json={"scheme": "zeros", "shape": [4], "seed": seed})
    assert response.headers["etag"] == direct.headers["etag"]


@pytest.mark.parametrize(("query", "body"), [("in_axes=-1&out_axes=0", {"in_axes": [-1], "out_axes": [0]}), ("gain=15e-1", {"gain": 1.5})])
def test_signs_and_exponents_as_in_json(live_http: httpx.Client, query: str, body: dict[str, Any]) -> None:
    response = live_http.get(f"/init/he_normal?shape=4,4&{query}")
    direct = live_http.post("/init", json={"scheme": "he_normal", "shape": [4, 4], **body})
    assert response.status_code == direct.status_code == 200, response.text[:300]
    assert response.headers["etag"] == direct.headers["etag"]
