"""The launcher: loopback by default, HOST/PORT from the environment, options pass through."""

from __future__ import annotations

import pytest

from service.api.serve import APP, command


def test_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    args = command([])
    assert args[:2] == [APP, "--factory"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "8000"
    assert args[args.index("--timeout-graceful-shutdown") + 1] == "30"


def test_environment_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9000")
    args = command(["--timeout-graceful-shutdown", "5", "--port", "9100"])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args.count("--timeout-graceful-shutdown") == 1
    assert args[-2:] == ["--port", "9100"]  # the last one wins in uvicorn's command line
