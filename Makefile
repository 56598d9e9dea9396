# Herald. `make run` starts the whole stack; `make test` runs lint and every test.
# Both set up what they need (Debian packages, Kafka jars, the venv) and are safe to rerun.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-faults lint unit integration setup venv clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

setup: venv
	scripts/setup.sh

run: setup
	scripts/run.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit -q

integration: setup
	$(VENV)/bin/pytest tests/integration -q

test: setup lint
	$(VENV)/bin/pytest -q tests/unit tests/integration

# The long crash and restart scenarios (kill -9 workers and the API, restart the broker);
# a separate broker on shifted ports, so it can run beside `make run`.
test-faults: setup
	HERALD_TEST_PORT_OFFSET=$${HERALD_TEST_PORT_OFFSET:-500} $(VENV)/bin/pytest -q -p no:cacheprovider tests/faults

clean:
	rm -rf .data/test .pytest_cache .mypy_cache .ruff_cache
