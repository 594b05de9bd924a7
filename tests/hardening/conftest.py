"""A small real FastAPI app with the hardening installed, and a loopback uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from service.api import problems
from service.api.hardening import admit, admitted, install

MiB = 1 << 20


@dataclass(frozen=True)
class StubSettings:
    """The hardening subset of the service settings."""

    api_keys: str = ""
    api_keys_file: str | None = None
    max_concurrent_generations: int = 2
    max_bytes_in_flight: int = 64 * MiB
    admission_timeout_seconds: float = 0.2
    max_client_share: float = 1.0
    cors_origins: str = ""
    access_log: str = "stderr"
    access_log_flush_seconds: float = 0.0
    access_log_probes: bool = False


def small_app(settings: StubSettings | None = None) -> FastAPI:
    """Probes, a JSON route with a path template, a problem route and a generating stream.

    Put together like ``create_app``: problem handlers, routes, then the hardening.
    """
    app = FastAPI()
    problems.install(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/items/{name}", operation_id="item")
    async def item(name: str) -> dict[str, str]:
        return {"name": name}

    @app.post("/echo", operation_id="echo")
    async def echo(payload: dict[str, int]) -> dict[str, int]:
        return payload

    @app.get("/problem", operation_id="problem")
    async def problem() -> None:
        raise problems.ProblemError("invalid-request", "d")

    @app.get("/stream", operation_id="init_get")
    async def stream(request: Request, blocks: int = 4, block: int = MiB, delay: float = 0.0) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(blocks):
                if delay:
                    await asyncio.sleep(delay)
                yield b"\0" * block

        headers = {"Content-Length": str(blocks * block)}
        return admitted(request, StreamingResponse(body(), media_type="application/octet-stream", headers=headers), blocks * block)

    @app.get("/work", operation_id="stats_get")
    async def work(request: Request, nbytes: int = 1, seconds: float = 0.0) -> dict[str, int]:
        async with admit(request, nbytes):
            await asyncio.sleep(seconds)
        return {"nbytes": nbytes}

    install(app, settings or StubSettings())
    return app


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a thread of this process."""

    def __init__(self, app: FastAPI):
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served() -> Iterator[ServerThread]:
    with ServerThread(small_app()) as server:
        yield server
