# The two Quickstart commands: `make start` and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: start test test-all test-gpu lint setup

setup:
	scripts/setup.sh app,test,eval

start: setup
	.venv/bin/seqmamba app

test: setup
	scripts/run_tests.sh $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
