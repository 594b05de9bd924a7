"""The fast paths of small GET /init answers give exactly what the general paths give.

* Seed templates (``resolution.QueryTemplates``): the same request with another seed,
  prepared from a template, equals a fresh ``prepare`` byte for byte: metadata, ETag,
  header, offsets, data. Anything a template cannot vouch for goes the general way,
  so errors are the same too.
* Direct dispatch (``edge.DirectRoutes``): an app whose generating routes skip
  FastAPI's routing answers exactly as the same routes through the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Message

from service.api.app import create_app
from service.api.edge import DirectRoutes
from service.api.problems import ProblemError
from service.api.resolution import Prepared, QueryTemplates, SeedTemplate, prepare, query_document
from service.api.settings import Settings
from service.core import SCHEMES

QUERIES: list[list[tuple[str, str]]] = [
    [("scheme", "he_uniform"), ("shape", "64,64")],
    [("scheme", "kaiming_normal"), ("shape", "32,16,3,3"), ("dtype", "bfloat16"), ("mode", "fan_out")],
    [("shape", "300,7"), ("scheme", "glorot_uniform"), ("convention", "keras"), ("dtype", "float16")],
    [("scheme", "truncated_normal"), ("shape", "1000"), ("convention", "jax"), ("lower", "-1.5"), ("upper", "2")],
    [("scheme", "orthogonal"), ("shape", "40,30"), ("gain", "2.0"), ("dtype", "float64")],
    [("scheme", "constant"), ("shape", "5,5"), ("value", "0.25")],
    [("scheme", "zeros"), ("shape", "0,3")],
    [("scheme", "he_normal"), ("shape", "8,8"), ("name", 'layers.3."quoted".weight')],
    [("scheme", "he_normal"), ("shape", "8,8"), ("name", "ünïcode/权重")],
    [("scheme", "he_normal"), ("shape", "8,8"), ("name", 'seed":1,"x')],
    [("scheme", "he_normal"), ("shape", "8,8"), ("name", '"seed":7,')],  # the key text itself: no template
    [("scheme", "eye"), ("shape", "6,9"), ("seed", "3")],  # seed first in the query
]
SEEDS = ["0", "1", "7", "10", "123456789", str(2**63), str(2**64 - 1)]


def settings() -> Settings:
    return Settings(access_log="off")


def with_seed(items: list[tuple[str, str]], seed: str | None) -> list[tuple[str, str]]:
    rest = [(k, v) for k, v in items if k != "seed"]
    return rest if seed is None else [*rest, ("seed", seed)]


def same(a: Prepared, b: Prepared) -> None:
    assert a.metadata == b.metadata
    assert a.etag == b.etag
    assert a.filename == b.filename
    assert a.specs == b.specs
    assert a.plan.header == b.plan.header
    assert a.plan.size == b.plan.size
    assert [(e.name, e.begin, e.end) for e in a.plan.entries] == [(e.name, e.begin, e.end) for e in b.plan.entries]
    assert a.plan.read() == b.plan.read()


@pytest.mark.anyio
@pytest.mark.parametrize("items", QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q)[:60])
async def test_templates_give_the_general_answer_for_every_seed(items: list[tuple[str, str]]) -> None:
    templates = QueryTemplates(settings())
    await templates.prepare(with_seed(items, "5"))  # makes the template (when one applies)
    for seed in [*SEEDS, None]:
        query = with_seed(items, seed)
        same(await templates.prepare(query), await prepare(query_document(query), settings()))


@pytest.mark.anyio
async def test_a_name_holding_the_seed_key_gets_no_template_but_the_right_answer() -> None:
    templates = QueryTemplates(settings())
    query = [("scheme", "he_normal"), ("shape", "8,8"), ("name", '"seed":7,'), ("seed", "7")]
    same(await templates.prepare(query), await prepare(query_document(query), settings()))
    assert len(templates) == 0
    with pytest.raises(ValueError, match="exactly once"):
        SeedTemplate(await prepare(query_document(query), settings()))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "seed",
    ["-1", "", "abc", "1.5", " 7", "+7", "007", "٧", str(2**64), "9" * 30, "1e3", "0x10", "true"],
)
async def test_unusual_seeds_take_the_general_path(seed: str) -> None:
    """Only plain decimal seeds use a template: every other spelling is judged (and reported) as before."""
    templates = QueryTemplates(settings())
    base = [("scheme", "he_uniform"), ("shape", "4,4")]
    await templates.prepare(with_seed(base, "1"))
    query = with_seed(base, seed)
    try:
        expected: Prepared | ProblemError = await prepare(query_document(query), settings())
    except ProblemError as err:
        expected = err
    try:
        got: Prepared | ProblemError = await templates.prepare(query)
    except ProblemError as err:
        got = err
    if isinstance(expected, ProblemError):
        assert isinstance(got, ProblemError)
        assert (got.status, got.slug, got.detail, got.errors) == (expected.status, expected.slug, expected.detail, expected.errors)
    else:
        assert isinstance(got, Prepared)
        same(got, expected)


@pytest.mark.anyio
async def test_a_repeated_seed_is_refused_even_with_a_template() -> None:
    templates = QueryTemplates(settings())
    base = [("scheme", "he_uniform"), ("shape", "4,4")]
    await templates.prepare(with_seed(base, "1"))
    with pytest.raises(ProblemError, match="more than once"):
        await templates.prepare([*base, ("seed", "1"), ("seed", "2")])


@pytest.mark.anyio
async def test_templates_are_bounded_least_recently_used_first_out() -> None:
    templates = QueryTemplates(settings(), max_entries=3, max_key_chars=40)
    for n in range(1, 6):
        await templates.prepare([("scheme", "zeros"), ("shape", str(n))])
    assert len(templates) == 3
    await templates.prepare([("scheme", "zeros"), ("shape", "1,1,1,1,1,1,1,1"), ("name", "x" * 40)])  # key too long
    assert len(templates) == 3


# -- direct dispatch == the router ----------------------------------------------------------


def routed_only(app: FastAPI) -> FastAPI:
    """The same app with DirectRoutes taken out: every request goes through FastAPI's router."""
    app.user_middleware = [m for m in app.user_middleware if not is_direct(m.cls)]
    return app


def is_direct(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, DirectRoutes)


def test_the_generating_routes_are_dispatched_directly() -> None:
    app = create_app(settings())
    (direct,) = [m for m in app.user_middleware if is_direct(m.cls)]
    table = DirectRoutes(lambda *a: None, **direct.kwargs).table  # type: ignore[arg-type]
    per_scheme = [
        (method, f"/{resource}/{name}") for name in SCHEMES for method, resource in (("GET", "init"), ("HEAD", "init"), ("GET", "stats"))
    ]
    general = [("GET", "/init"), ("GET", "/stats"), ("HEAD", "/init"), ("POST", "/init"), ("POST", "/stats"), ("GET", "/auth")]
    assert sorted(table) == sorted(general + per_scheme)
    assert app.user_middleware[-1] == direct  # innermost: access control and CORS come first


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/auth", {}),
    ("GET", "/init", {"params": {"scheme": "he_uniform", "shape": "64,64", "seed": "3"}}),
    ("HEAD", "/init", {"params": {"scheme": "he_uniform", "shape": "64,64", "seed": "3"}}),
    ("GET", "/init", {"params": {"scheme": "he_uniform", "shape": "64,64"}, "headers": {"Range": "bytes=100-199"}}),
    ("GET", "/init", {"params": {"scheme": "he_uniform", "shape": "64,64"}, "headers": {"Range": "bytes=9-1"}}),
    ("GET", "/init", {"params": {"scheme": "nope", "shape": "64,64"}}),
    ("GET", "/init", {"params": {"scheme": "he_uniform", "shape": "64,64", "seed": "-1"}}),
    ("GET", "/init", {"params": {"scheme": "he_uniform", "shape": "2000000000,2000000000"}}),
    ("POST", "/init", {"json": {"scheme": "he_normal", "shape": [3, 3], "seed": 1}}),
    ("POST", "/init", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/init", {"json": {"seed": 1, "tensors": {"a": {"scheme": "zeros", "shape": [2]}, "b": {"scheme": "ones", "shape": [3]}}}}),
    ("GET", "/stats", {"params": {"scheme": "he_uniform", "shape": "64,64", "bins": "8"}}),
    ("GET", "/stats", {"params": {"scheme": "he_uniform", "shape": "64,64"}, "headers": {"Accept": "text/plain"}}),
    ("POST", "/stats", {"json": {"scheme": "he_normal", "shape": [16, 16]}}),
    ("GET", "/init/he_uniform", {"params": {"shape": "64,64", "seed": "3"}}),
    ("HEAD", "/init/he_uniform", {"params": {"shape": "64,64", "seed": "3"}}),
    ("GET", "/init/he_uniform", {"params": {"shape": "64,64", "scheme": "he_uniform"}}),
    ("GET", "/stats/constant", {"params": {"shape": "64,64", "value": "2", "bins": "4"}}),
    ("GET", "/init/nope", {"params": {"shape": "2"}}),
    ("PUT", "/init", {}),
    ("GET", "/init/", {"params": {"scheme": "zeros", "shape": "2"}}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "kw"), REQUESTS, ids=lambda r: str(r)[:50])
async def test_direct_dispatch_answers_as_the_router(method: str, path: str, kw: dict[str, Any]) -> None:
    answers = []
    for app in (create_app(settings()), routed_only(create_app(settings()))):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            headers = {"X-Request-ID": "fixed", **kw.get("headers", {})}
            answers.append(await c.request(method, path, headers=headers, **{k: v for k, v in kw.items() if k != "headers"}))
    direct, routed = answers
    assert direct.status_code == routed.status_code
    assert direct.content == routed.content
    drop = {"date"}
    assert {k: v for k, v in direct.headers.items() if k not in drop} == {k: v for k, v in routed.headers.items() if k not in drop}


@pytest.mark.anyio
async def test_a_longer_seed_cannot_take_a_template_over_the_response_limit() -> None:
    """The header holds the seed's digits: a file at the limit with seed 0 is over it with seed 2^64 - 1."""
    base = [("scheme", "zeros"), ("shape", "1000")]
    size0 = (await prepare(query_document(with_seed(base, "0")), settings())).size
    tight = Settings(access_log="off", max_response_bytes=size0)
    templates = QueryTemplates(tight)
    assert (await templates.prepare(with_seed(base, "0"))).size == size0  # at the limit: a template now
    assert len(templates) == 1
    with pytest.raises(ProblemError) as general:
        await prepare(query_document(with_seed(base, str(2**64 - 1))), tight)
    with pytest.raises(ProblemError) as templated:
        await templates.prepare(with_seed(base, str(2**64 - 1)))
    assert (templated.value.status, templated.value.slug, templated.value.detail) == (413, "limit-exceeded", general.value.detail)


@pytest.mark.anyio
async def test_templates_follow_the_settings_they_are_given() -> None:
    templates = QueryTemplates(settings())
    query = [("scheme", "zeros"), ("shape", "1000"), ("seed", "1")]
    await templates.prepare(query)
    assert len(templates) == 1
    with pytest.raises(ProblemError, match="max_response_bytes"):
        await templates.prepare(query, Settings(access_log="off", max_response_bytes=100))
    assert len(templates) == 0  # made under other limits: dropped


def test_no_direct_dispatch_with_opentelemetry_on() -> None:
    """FastAPI names its spans after the route its router selects: with OTel on, every request goes through it."""
    app = create_app(Settings(access_log="off", otel=True))
    assert not [m for m in app.user_middleware if is_direct(m.cls)]


# -- DirectRoutes on toy routes: what it must not take, and errors as Starlette handles them ------

toy = APIRouter()


@toy.get("/sync")
def sync_endpoint(request: Request) -> Response:  # a plain def: FastAPI runs it in a thread
    return PlainTextResponse("sync")


@toy.get("/teapot")
async def teapot(request: Request) -> Response:
    raise HTTPException(418, "short and stout")


@toy.get("/late")
async def late(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        raise ProblemError("invalid-request", "after the first byte")

    return StreamingResponse(body())


@toy.get("/fine")
async def fine(request: Request) -> Response:
    return PlainTextResponse("fine")


def toy_app(*, direct: bool, dependencies: list[Any] | None = None, status_handler: bool = False) -> FastAPI:
    from service.api import problems

    app = FastAPI(dependencies=dependencies or [])
    problems.install(app)
    if status_handler:

        async def by_status(request: Request, exc: Exception) -> Response:
            return PlainTextResponse("the 418 handler", status_code=418)

        app.add_exception_handler(418, by_status)
    app.include_router(toy)
    if direct:
        app.add_middleware(DirectRoutes, fastapi=app, routes=toy.routes)
    return app


async def raw_call(app: FastAPI, path: str) -> tuple[int, bytes, str]:
    """Status, body and the exception (type: message) that escaped the app, if any."""
    scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http"}
    scope |= {"path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": None, "server": None}
    scope["headers"] = [(b"x-request-id", b"fixed")]
    status, body, escaped = 0, b"", ""

    requested = False

    async def receive() -> Message:
        nonlocal requested
        if requested:  # the client stays: only the request itself comes
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    try:
        await app(scope, receive, send)
    except Exception as exc:
        escaped = f"{type(exc).__name__}: {exc}"
    return status, body, escaped


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "kw"),
    [
        ("/sync", {}),
        ("/teapot", {}),
        ("/teapot", {"status_handler": True}),
        ("/late", {}),
        ("/fine", {"dependencies": "deny"}),
    ],
    ids=["sync-endpoint", "http-exception", "status-code-handler", "handled-error-after-start", "app-dependency"],
)
async def test_toy_routes_answer_directly_as_through_the_router(path: str, kw: dict[str, Any]) -> None:
    async def deny(request: Request) -> None:
        raise HTTPException(403, "no")

    if kw.get("dependencies") == "deny":
        kw = {**kw, "dependencies": [Depends(deny)]}
    direct = await raw_call(toy_app(direct=True, **kw), path)
    routed = await raw_call(toy_app(direct=False, **kw), path)
    assert direct == routed


def test_direct_dispatch_takes_only_async_request_only_routes_returning_responses() -> None:
    app = toy_app(direct=False)
    table = DirectRoutes(lambda *a: None, fastapi=app, routes=toy.routes).table  # type: ignore[arg-type]
    assert sorted(path for _, path in table) == ["/fine", "/late", "/teapot"]  # not the sync one
    app_with_deps = toy_app(direct=False, dependencies=[Depends(lambda: None)])
    assert DirectRoutes(lambda *a: None, fastapi=app_with_deps, routes=toy.routes).table == {}  # type: ignore[arg-type]
