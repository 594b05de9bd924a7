"""Fixtures for the client tests: the real service (the shared ``live_server`` of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from safetensors.numpy import save

from service.api.app import create_app
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server

API_KEY = "client-test-key"


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
