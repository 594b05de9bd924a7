# One command each: `make run` starts the service, `make test` checks everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run cluster nginx browser test lint typecheck pytest golden bench openapi clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./clients/python
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service.api.serve service.api.app:create_app --factory --host $(HOST) --port $(PORT)

# N replicas on PORT+1..PORT+N behind nginx on PORT (deploy/cluster.py); Ctrl-C stops them all.
REPLICAS ?= 2
cluster: $(STAMP) nginx
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

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) nginx browser
	$(BIN)/pytest -q

golden: $(STAMP)
	$(BIN)/python -m tests.golden.regenerate

bench: $(STAMP)
	$(BIN)/python -m bench.engine

openapi: $(STAMP)
	$(BIN)/python -m service.api.openapi_export

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
