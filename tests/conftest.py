"""Shared fixtures: the service in-process (JSON endpoints) and on a real loopback server (streams)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from service.api.settings import Settings
from service.core.algorithms import warm_up


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile (or load from numba's cache) every kernel once, before any test times anything.

    On a fresh clone the cache is empty, and a first request would spend seconds
    compiling inside a test with a short timeout; servers started in subprocesses later
    load what this wrote.
    """
    warm_up()


@dataclass
class LiveServer:
    """A real uvicorn (httptools, uvloop) serving ``create_app`` on 127.0.0.1, in a thread of this process.

    In-process on purpose: tests read ``app.state.counters`` (blocks generated, streams
    aborted) to prove that a disconnect stops generation.
    """

    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(app: FastAPI) -> LiveServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race with other processes
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http="httptools", loop="uvloop")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="live-uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return LiveServer(app, server, thread, port)


def stop_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(20)


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """The service with default settings on a free loopback port (session-wide)."""
    live = start_server(create_app(Settings()))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def live_http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """A plain httpx client bound to :func:`live_server`."""
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app() -> FastAPI:
    """A fresh app with default settings (for in-process tests)."""
    return create_app(Settings())


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (httpx ASGITransport, lifespan run): buffers bodies, so for JSON and small files."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
