# Targets match the README.
PY ?= python

.PHONY: install test test-fast lint format demo

install:  # exactly the README's test install
	$(PY) -m pip install -e ".[test]"

# Two pytest workers (pytest-xdist), each running whole test files (module fixtures start once):
# most tests wait on Ray, servers and subprocesses, so two of them share 2 cores well.
# `make test WORKERS=0` runs them in this process, one after the other.
WORKERS ?= 2

test:
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile

test-fast:
	$(PY) -m pytest -q -m "not slow"

lint:
	$(PY) -m ruff check gair jobs tests bench tools
	$(PY) -m ruff format --check gair jobs tests bench tools

format:
	$(PY) -m ruff format gair jobs tests bench tools
