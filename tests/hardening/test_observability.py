"""Metrics by route template, request ids, ids in problems, JSON access logs."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.api.logging import ACCESS_LOGGER, AccessLog
from service.api.metrics import Metrics
from tests.metrics import sample

from .conftest import StubSettings, small_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def access_log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The access log of every app made in the test, written line by line to a string."""
    stream = io.StringIO()

    def to_stream(cls: type[AccessLog], where: str, *, flush_seconds: float = 1.0) -> AccessLog:
        return cls(stream, flush_seconds=0)

    monkeypatch.setattr(AccessLog, "open", classmethod(to_stream))
    return stream


def client(settings: StubSettings | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=small_app(settings)), base_url="http://test")


async def test_requests_counted_by_route_template_and_status() -> None:
    async with client() as c:
        for name in ("a", "b", "c"):
            assert (await c.get(f"/items/{name}")).status_code == 200
        for n in range(3):
            assert (await c.get(f"/random/{n}")).status_code == 404
        assert (await c.post("/echo", content=b"{")).status_code == 422
        assert (await c.request("BREW", "/items/a")).status_code == 405
        text = (await c.get("/metrics")).text
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/items/{name}", status="200") == 3
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="<unmatched>", status="404") == 3
    assert sample(text, "tensorinit_http_requests_total", method="POST", route="/echo", status="422") == 1
    assert sample(text, "tensorinit_http_requests_total", method="OTHER", route="/items/{name}", status="405") == 1
    assert "/random/1" not in text


async def test_metrics_endpoint_is_prometheus_text() -> None:
    async with client() as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in (
        "tensorinit_bytes_generated_total",
        "tensorinit_generation_seconds_count",
        "tensorinit_generations_in_flight",
        "tensorinit_generation_bytes_in_flight",
        "tensorinit_streams_disconnected_total",
    ):
        assert sample(response.text, name) == 0


async def test_registries_are_private_per_app() -> None:
    async with client() as first, client() as second:
        await first.get("/items/x")
        text = (await second.get("/metrics")).text
    with pytest.raises(KeyError):
        sample(text, "tensorinit_http_requests_total", method="GET", route="/items/{name}", status="200")


async def test_instrument_stream_counts_bytes_errors_and_early_close() -> None:
    metrics = Metrics()

    async def chunks(fail: bool) -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"
        if fail:
            raise RuntimeError("engine failure")

    assert [c async for c in metrics.instrument_stream(chunks(False))] == [b"abc", b"de"]
    with pytest.raises(RuntimeError):
        async for _ in metrics.instrument_stream(chunks(True)):
            pass
    early = metrics.instrument_stream(chunks(False))
    assert await anext(early) == b"abc"
    await early.aclose()
    text = metrics.render().decode()
    assert sample(text, "tensorinit_bytes_generated_total") == 5 + 5 + 3
    assert sample(text, "tensorinit_stream_errors_total") == 1
    assert sample(text, "tensorinit_streams_disconnected_total") == 1
    assert sample(text, "tensorinit_generation_seconds_count") == 3


async def test_request_id_generated_and_echoed(access_log: io.StringIO) -> None:
    async with client() as c:
        response = await c.get("/items/a?q=1")
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    line = json.loads(access_log.getvalue().strip())
    assert line["request_id"] == request_id
    assert line["route"] == "/items/{name}"
    assert line["path"] == "/items/a"
    assert line["query"] == "q=1"
    assert line["status"] == 200
    assert line["bytes"] == len(response.content)
    assert line["logger"] == ACCESS_LOGGER


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123.def:ghi_J", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ('quote"brace}', False),
        ("ünïcode", False),
    ],
)
async def test_incoming_request_id_kept_only_when_sane(incoming: str, kept: bool) -> None:
    async with client() as c:
        response = await c.get("/items/a", headers={b"X-Request-ID": incoming.encode()})
    assert (response.headers["x-request-id"] == incoming) is kept


async def test_request_id_in_problem_bodies_and_log(access_log: io.StringIO) -> None:
    async with client() as c:
        response = await c.get("/problem", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 400
    assert response.json()["request_id"] == "trace-1"
    assert response.headers["x-request-id"] == "trace-1"
    assert json.loads(access_log.getvalue())["request_id"] == "trace-1"


async def test_no_bodies_or_authorization_in_logs(access_log: io.StringIO) -> None:
    async with client(StubSettings(api_keys="k-123")) as c:
        await c.post("/echo", json={"body_marker": 7}, headers={"Authorization": "Bearer k-123", "Cookie": "sid=zzz"})
    logged = access_log.getvalue()
    assert json.loads(logged)["status"] == 200
    for secret in ("body_marker", "k-123", "Bearer", "sid=zzz"):
        assert secret not in logged


async def test_unhandled_error_is_logged_as_500(access_log: io.StringIO) -> None:
    app = small_app()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test") as c:
        response = await c.get("/boom")
        text = (await c.get("/metrics")).text
    assert response.status_code == 500
    assert json.loads(access_log.getvalue().splitlines()[0])["status"] == 500
    assert sample(text, "tensorinit_http_requests_total", method="GET", route="/boom", status="500") == 1


async def test_stream_counters_exported() -> None:
    app = small_app()
    metrics = app.state.hardening.metrics

    class Counts:
        blocks_generated = 7
        streams_started = 3
        streams_completed = 2
        streams_aborted = 1

    metrics.observe_stream_counters(Counts())
    text = metrics.render().decode()
    assert sample(text, "tensorinit_blocks_generated_total") == 7
    assert sample(text, "tensorinit_streams_total", outcome="aborted") == 1
    assert sample(text, "tensorinit_streams_total", outcome="completed") == 2


# -- the access log writer ------------------------------------------------------------


def test_access_log_off_writes_nothing() -> None:
    log = AccessLog.open("off")
    assert not log.enabled
    log.write({"status": 200})
    log.close()


@pytest.mark.parametrize(("where", "attr"), [("stderr", "stderr"), ("stdout", "stdout")])
def test_access_log_standard_streams(where: str, attr: str) -> None:
    import sys

    assert AccessLog.open(where).stream is getattr(sys, attr)


def test_access_log_file_is_appended_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text('{"earlier":true}\n')
    log = AccessLog.open(str(path), flush_seconds=60)
    log.write({"status": 200, "path": "/init"})  # no event loop to flush later: written at once
    assert len(path.read_text().splitlines()) == 2
    log.close()
    first, second = path.read_text().splitlines()
    assert json.loads(first) == {"earlier": True}
    line = json.loads(second)
    assert (line["logger"], line["msg"], line["status"], line["path"]) == (ACCESS_LOGGER, "request", 200, "/init")
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-01-01T00:00:00.000Z")


async def test_access_log_batches_by_count() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=60, max_pending=3)
    for i in range(2):
        log.write({"i": i})
    assert stream.getvalue() == ""
    log.write({"i": 2})
    assert [json.loads(x)["i"] for x in stream.getvalue().splitlines()] == [0, 1, 2]


async def test_access_log_flushes_on_a_timer_when_traffic_stops() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=0.05, max_pending=1000)
    log.write({"i": 0})
    log.write({"i": 1})
    assert stream.getvalue() == ""
    await asyncio.sleep(0.2)
    assert [json.loads(x)["i"] for x in stream.getvalue().splitlines()] == [0, 1]


def test_access_log_broken_stream_never_fails_a_request() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=0)
    stream.close()
    log.write({"status": 200})  # ValueError on a closed stream: swallowed


def test_access_log_escapes_hostile_values() -> None:
    stream = io.StringIO()
    AccessLog(stream, flush_seconds=0).write({"path": '/x"\n{"forged":1}', "user_agent": "\u2028ü"})
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["path"] == '/x"\n{"forged":1}'


def test_fresh_request_ids_are_unique_and_32_hex() -> None:
    from service.api.request_id import RequestIds

    a, b = RequestIds(), RequestIds()
    ids = [a.new() for _ in range(1000)] + [b.new() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_access_log_timer_follows_the_running_loop() -> None:
    """A timer set on a loop that has ended never fires: the next line sets one on its own loop."""
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=0.05, max_pending=1000)

    async def line(tag: int, wait: float) -> None:
        log.write({"n": tag})
        await asyncio.sleep(wait)

    asyncio.run(line(1, 0))  # this loop ends before its timer fires
    asyncio.run(line(2, 0.3))
    assert [json.loads(x)["n"] for x in stream.getvalue().splitlines()] == [1, 2]


def test_access_log_failure_is_reported_once_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=0)
    stream.close()
    log.write({"status": 200})
    log.write({"status": 200})
    assert capfd.readouterr().err.count("the access log cannot be written") == 1


async def test_an_app_file_log_outlives_a_lifespan(tmp_path: Path) -> None:
    """The lifespan's end flushes the log but leaves it open: a second lifespan logs on."""
    from service.api.app import create_app
    from service.api.settings import Settings

    path = tmp_path / "access.log"
    app = create_app(Settings(access_log=str(path), access_log_flush_seconds=60))
    for expected in (1, 2):
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            assert (await c.get("/version")).status_code == 200
        assert len(path.read_text().splitlines()) == expected  # flushed at each lifespan's end
    app.state.hardening.access_log.close()


# JAX, once another test has imported it in this process (tests/client's framework="jax" rows), warns at
# every fork that its threads may deadlock the child; this child runs no JAX, only the request-id generator.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_a_forked_worker_draws_other_request_ids() -> None:
    import os

    from service.api.request_id import RequestIds

    ids = RequestIds()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running pytest's teardown
        os.write(write, " ".join(ids.new() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    parent = [ids.new() for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)


async def test_the_first_request_id_header_counts(access_log: io.StringIO) -> None:
    async with client() as c:
        response = await c.get("/items/a", headers=[("X-Request-ID", "first"), ("X-Request-ID", "second"), ("User-Agent", "ua-1")])
    assert response.headers["x-request-id"] == "first"
    line = json.loads(access_log.getvalue())
    assert (line["request_id"], line["user_agent"]) == ("first", "ua-1")


@pytest.mark.parametrize(
    ("probes", "path", "logged"),
    [
        (False, "/healthz", False),
        (False, "/readyz", False),
        (False, "/metrics", False),
        (False, "/items/healthz", True),  # a path, not a suffix
        (True, "/healthz", True),
        (True, "/readyz", True),
        (True, "/metrics", True),
        (True, "/items/a", True),
    ],
)
async def test_probes_stay_out_of_the_access_log_unless_asked(access_log: io.StringIO, probes: bool, path: str, logged: bool) -> None:
    async with client(StubSettings(access_log_probes=probes)) as c:
        assert (await c.get(path)).status_code == 200
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert [line["path"] for line in lines] == ([path] if logged else [])
