# flagedge — two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench clean loadtest proto

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

## Everything: unit, integration, chaos, conformance and browser tests, on both cores
## (pytest-xdist; a module's tests stay together on one worker: they share its fixtures).
## Most integration tests wait on processes, not the CPU: 28 min 46 s serial on the 2-core
## machine, 9 min 10 s like this, 2,526 passed either way.
test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --dist loadfile

## Unit tests only (the inner loop, under a minute: on both cores of the 2-core machine).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not integration and not slow and not conformance"

## Browser end-to-end tests only (also part of `make test`): installs Debian's chromium with
## apt-get if missing, the demo page's npm packages into .cache/, builds its bundle (esbuild).
.PHONY: e2e
e2e: $(STAMP)
	$(PY) -m tests.e2e.setup_browser
	$(PY) -m pytest -q -ra -m e2e tests/e2e

## Regenerate the flagd sync gRPC stubs (proxy/sync/sync_pb2*.py, committed) from the vendored
## protobuf/flagd/sync/v1/sync.proto with grpcio-tools.
proto: $(STAMP)
	$(PY) scripts/gen_proto.py

lint: $(STAMP)
	$(VENV)/bin/ruff check proxy tests bench

## Locust headless against a stack of its own; report in loadtests/report/.
loadtest: $(STAMP)
	$(PY) loadtests/run.py

## Benchmarks: every bench with a goal in turn (bench/run_all.py), each against a baseline
## measured in the same run; one table, written as JSON under bench/results/; exit 1 when a
## goal is missed or a bench failed or was skipped. BENCH="evaluator propagation" runs some;
## QUICK=1 runs each briefly; BENCH_LOCK=FILE holds an flock on FILE around each bench.
BENCH      ?=
QUICK      ?=
BENCH_LOCK ?=
bench: $(STAMP)
	$(PY) bench/run_all.py $(if $(QUICK),--quick) $(if $(BENCH_LOCK),--lock $(BENCH_LOCK)) $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
