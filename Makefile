# One command each: `make run` starts the service, `make test` checks everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run cluster nginx browser test lint typecheck pytest golden bench openapi clean

# Two installs, each done once (a stamp per install): `make run` installs what serving needs,
# the service's runtime dependencies and the client; `make test` adds the dev extra (torch,
# mypy, schemathesis, selenium: over 1 GB) on top. pip is not quiet: its lines are the progress.
# PIP_COMPILE=0: pip would byte-compile every installed module (scipy, matplotlib, numba), and
# setuptools in each build environment, before the first start; Python compiles what it imports,
# when it first imports it. (An environment variable, so that pip's build environments see it too.)
# --no-build-isolation: the two editable installs build with the venv's setuptools instead of
# installing it into a fresh build environment each (8 s of the 48 s install, measured).
PIP := PIP_COMPILE=0 $(BIN)/python -m pip install --progress-bar on --no-build-isolation
# ...but Python compiles what it imports at each start, and writes nothing down, wherever
# PYTHONDONTWRITEBYTECODE is set (this project's machines and its Dockerfile set it): every
# `tensorinit` command then spent 0.45 s compiling httpx, numpy and the client from source, and
# every server start 3.9 s (1.7 s with bytecode), in every test that starts one. So the installed
# packages and the project's own are compiled once, in parallel, after each install (19 s for the
# dev venv on two cores). -qq: some packages ship files that are not Python 3 on purpose (test
# data, templates), which compileall reports and counts as failures; the interpreter never imports
# them, and anything it does import is compiled by it as before, so those failures are not ours.
COMPILE := $(BIN)/python -m compileall -qq -j 0

# The venv is made without pip, and pip is put in by $(PY)'s own pip: venv's ensurepip byte-compiles
# pip and setuptools, 15 s on a busy two-core machine against 0.5 s. A $(PY) without pip falls back to it.
# setuptools as pyproject.toml's [build-system] requires it, for the builds without isolation.
$(BIN)/python:
	@echo "==> make: creating $(VENV) with $(PY)"
	$(PY) -m venv --without-pip $(VENV)
	PIP_COMPILE=0 $(PY) -m pip --python $(BIN)/python install --quiet pip 'setuptools>=68' || \
		{ $(BIN)/python -m ensurepip && $(BIN)/python -m pip install --quiet 'setuptools>=68'; }

$(RUN_STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	@echo "==> make: installing the service and the client (runtime dependencies only) into $(VENV)"
	$(PIP) -e . -e ./clients/python
	$(COMPILE) $(VENV)/lib service clients/python/tensorinit || true
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	@echo "==> make: installing the dev extra (pytest, ruff, mypy, torch, schemathesis, selenium) into $(VENV)"
	$(PIP) -e '.[dev]' -e ./clients/python
	$(COMPILE) $(VENV)/lib service clients/python/tensorinit tests bench deploy || true
	touch $@

run: $(RUN_STAMP)
	@echo "==> make: serving on http://$(HOST):$(PORT) (/healthz at once; /readyz and a 'ready' line once the kernels are compiled)"
	$(BIN)/python -m service.api.serve service.api.app:create_app --factory --host $(HOST) --port $(PORT)

# N replicas on PORT+1..PORT+N behind nginx on PORT (deploy/cluster.py); Ctrl-C stops them all.
REPLICAS ?= 2
cluster: $(RUN_STAMP) nginx
	$(BIN)/python -m deploy.cluster --port $(PORT) --replicas $(REPLICAS)

# Debian's nginx (with its slice module) for `make cluster` and tests/cluster, installed when missing.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		{ apt-get update && apt-get install -y --no-install-recommends nginx; }

# tests/browser drives Debian's Chromium through its chromedriver; installed only when missing
# (CI runs as root on a clean machine, so the package lists are fetched first).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

test: $(DEV_STAMP) lint typecheck pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP) nginx browser
	$(BIN)/pytest -q

golden: $(DEV_STAMP)
	$(BIN)/python -m tests.golden.regenerate

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.engine

openapi: $(RUN_STAMP)
	$(BIN)/python -m service.api.openapi_export

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
