"""Fixtures for the client tests: the real service (the shared ``live_server`` of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from safetensors.numpy import save
from tensorinit import AsyncClient, Client

from service.api.app import create_app
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server

API_KEY = "client-test-key"

Twin = Callable[..., Any]
"""``twin(url, client_kwargs, method, *args, **kwargs)``: one call through a fresh client of one kind."""


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> Twin:
    """Each test that takes it runs once through :class:`Client` and once through :class:`AsyncClient`."""

    def sync(url: str, client: dict[str, Any], method: str, *args: Any, **kwargs: Any) -> Any:
        with Client(url, **client) as c:
            return getattr(c, method)(*args, **kwargs)

    def asynchronous(url: str, client: dict[str, Any], method: str, *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            async with AsyncClient(url, **client) as c:
                return await getattr(c, method)(*args, **kwargs)

        return anyio.run(call)

    return sync if request.param == "sync" else asynchronous


@pytest.fixture(scope="session")
def live_url(live_server: LiveServer) -> str:
    """Base URL of the real tensorinit service, served by uvicorn on a loopback port."""
    return live_server.url


@pytest.fixture(scope="session")
def keyed_url() -> Iterator[str]:
    """The real service with API keys switched on (``TENSORINIT_API_KEYS`` = :data:`API_KEY`)."""
    live = start_server(create_app(Settings(api_keys=API_KEY)))
    try:
        yield live.url
    finally:
        stop_server(live)


@pytest.fixture(scope="session")
def small_body() -> bytes:
    """A two-tensor safetensors body (F32 and F16) of about 1.05 MB, made by safetensors itself."""
    rng = np.random.default_rng(0)
    return save({"a": rng.standard_normal((512, 512)).astype(np.float32), "b": rng.standard_normal(1000).astype(np.float16)})
