# Targets match the README.
PY ?= python

.PHONY: install test test-fast lint format demo

install:  # exactly the README's test install
	$(PY) -m pip install -e ".[test]"

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

lint:
	$(PY) -m ruff check gair jobs tests bench tools
	$(PY) -m ruff format --check gair jobs tests bench tools

format:
	$(PY) -m ruff format gair jobs tests bench tools
