"""Deployment files (no Docker daemon here): parsed and checked against the code and `make run`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML comes with uvicorn[standard]

from service.api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_environment_names_real_settings_with_their_defaults() -> None:
    env = compose()["services"]["tensorinit"]["environment"]
    fields = Settings.model_fields
    defaults = Settings.model_construct()
    for key, value in env.items():
        if key in ("HOST", "PORT"):
            continue
        assert key.startswith("TENSORINIT_"), key
        name = key.removeprefix("TENSORINIT_").lower()
        assert name in fields, f"{key} is not a setting"
        assert getattr(Settings.model_validate({name: value}), name) == getattr(defaults, name), key  # parsed as the env var is
    assert {f"TENSORINIT_{k.upper()}" for k in Settings().public_limits()} <= set(env)


def test_compose_healthcheck_probes_healthz_without_curl() -> None:
    test = compose()["services"]["tensorinit"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3]


def test_dockerfile_runs_the_same_factory_as_make_run_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    target = "service.api.app:create_app --factory"
    assert target in dockerfile and target in makefile
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "${PORT:-8000}" in dockerfile and "0.0.0.0" in dockerfile
    assert "pip install ." in dockerfile
