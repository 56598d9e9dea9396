# Herald. `make run` starts the whole stack; `make test` runs lint and every test.
# Both set up what they need (Debian packages, Kafka jars, the venv) and are safe to rerun.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-faults bench bench-quick lint unit integration setup venv clean

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

# Benchmarks (see bench/run.py): the real stack on ports shifted by 300, load from a
# separate process, results in bench/results/<scenario>.json and a table on stdout.
# `make bench-quick` takes about 7 minutes (the flow-control scenarios hot and dead, and
# latency's one-destination rates, are 2 of them; light, router, scale and memory about 3);
# `make bench` is the full run (about 20, plus about 25 for hot and dead: dead holds 100
# events/s for 10 minutes twice; and about 15 for memory's 100,000 destinations).
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(VENV)/bin/python -m bench.run

bench-quick: setup $(BENCH_STAMP)
	$(VENV)/bin/python -m bench.run --quick

clean:
	rm -rf .data/test .pytest_cache .mypy_cache .ruff_cache
