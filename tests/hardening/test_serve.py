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
    assert "--no-access-log" in args


def test_environment_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9000")
    args = command(["--timeout-graceful-shutdown", "5", "--port", "9100"])
    assert args[:2] == [APP, "--factory"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args.count("--timeout-graceful-shutdown") == 1
    assert args.count("--port") == 1
    assert args[args.index("--port") + 1] == "9100"


def test_an_explicit_app_as_make_run_and_the_dockerfile_give() -> None:
    args = command([APP, "--factory", "--host", "0.0.0.0", "--port", "8000"])
    assert args.count(APP) == 1
    assert args.count("--host") == 1
    assert args[args.index("--timeout-graceful-shutdown") + 1] == "30"
