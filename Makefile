# flagedge — two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench clean loadtest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start the proxy with a local redis-server seeded with config/flags.json. Both run as child
## processes; Ctrl-C, SIGTERM (make forwards it) or SIGHUP stops both.
run: $(STAMP)
	$(PY) -m proxy.dev.devrun

## Everything: unit, integration, chaos, conformance and browser tests.
test: $(STAMP)
	$(PY) -m pytest -q -ra

## Unit tests only (the inner loop, under a minute).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow and not conformance"

## Browser end-to-end tests only (also part of `make test`): installs Debian's chromium with
## apt-get if missing, the demo page's npm packages into .cache/, builds its bundle (esbuild).
.PHONY: e2e
e2e: $(STAMP)
	$(PY) -m tests.e2e.setup_browser
	$(PY) -m pytest -q -ra -m e2e tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check proxy tests bench

## Locust headless against a stack of its own; report in loadtests/report/.
loadtest: $(STAMP)
	$(PY) loadtests/run.py

## Benchmarks: each prints ratios against a baseline measured in the same run.
bench: $(STAMP)
	$(PY) bench/evaluator.py
	$(PY) bench/propagation.py
	$(PY) bench/ofrep_http.py
	$(PY) bench/sse.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
