"""Deployment files (no Docker daemon here): parsed and checked against the code and `make run`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with uvicorn[standard]

from deploy.cluster import AUTH_REQUEST, PLACEHOLDER, TEMPLATE, render
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


def test_compose_healthcheck_probes_readyz_without_curl() -> None:
    test = compose()["services"]["tensorinit"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/readyz" in test[3]


def test_compose_runs_replicas_behind_the_nginx_conf_of_make_cluster() -> None:
    services = compose()["services"]
    service, nginx = services["tensorinit"], services["nginx"]
    assert "ports" not in service and service["expose"] == ["8000"]  # reached through nginx only
    assert service["deploy"]["replicas"] == "${REPLICAS:-2}"
    assert nginx["depends_on"] == {"tensorinit": {"condition": "service_healthy"}}
    assert "./deploy/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in nginx["volumes"]
    env = nginx["environment"]
    assert f"nginx-cache:{env['TENSORINIT_NGINX_STATE']}" in nginx["volumes"] and "nginx-cache" in compose()["volumes"]
    assert (env["NGINX_ENVSUBST_OUTPUT_DIR"], env["NGINX_ENVSUBST_FILTER"]) == ("/etc/nginx", "^TENSORINIT_NGINX_")
    # the image's envsubst fills exactly the placeholders deploy/cluster.py fills
    rendered = render(TEMPLATE.read_text(), {k: v for k, v in env.items() if k.startswith("TENSORINIT_NGINX_")})
    assert "server tensorinit:8000 max_fails=1" in rendered and "listen 8080;" in rendered
    assert set(PLACEHOLDER.findall(TEMPLATE.read_text())) == {k for k in env if k.startswith("TENSORINIT_NGINX_")}
    assert nginx["ports"] == ["127.0.0.1:${PORT:-8000}:8080"]
    assert env["TENSORINIT_NGINX_AUTH_REQUEST"] == AUTH_REQUEST  # on whatever the keys: safe if they are set later


def test_dockerfile_runs_the_same_factory_as_make_run_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    target = "service.api.app:create_app --factory"
    assert target in dockerfile and target in makefile
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "${PORT:-8000}" in dockerfile and "0.0.0.0" in dockerfile
    assert "pip install ." in dockerfile


def test_render_fills_every_placeholder_and_refuses_a_missing_one() -> None:
    template = "user ${TENSORINIT_NGINX_USER}; listen ${TENSORINIT_NGINX_LISTEN}; proxy_cache_key $uri$is_args$args;"
    assert render(template, {"TENSORINIT_NGINX_USER": "nginx", "TENSORINIT_NGINX_LISTEN": "8080"}) == (
        "user nginx; listen 8080; proxy_cache_key $uri$is_args$args;"
    )
    with pytest.raises(KeyError, match="TENSORINIT_NGINX_LISTEN"):
        render(template, {"TENSORINIT_NGINX_USER": "nginx"})
