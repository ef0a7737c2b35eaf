# trioxy: `make run` starts the demo, `make test` runs the whole suite.
# Both create/refresh the local virtualenv (.venv) and install what they need,
# Debian packages included (apt-get, as root) when a test needs them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the test suite talks to (real peers, not mocks).
TEST_DEBS := curl mosquitto bind9-dnsutils dnsmasq-base dante-server tinyproxy-bin
BENCH_DEBS := nginx-light haproxy wrk iperf3 curl dnsperf mosquitto dnsmasq-base openssl

.PHONY: run test lint typecheck bench docs clean deps-test deps-bench

$(STAMP): pyproject.toml tests/plugin_example/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]' -e tests/plugin_example
	touch $(STAMP)

venv: $(STAMP)

deps-test:
	@./.ci/apt-install $(TEST_DEBS)

deps-bench:
	@./.ci/apt-install $(BENCH_DEBS)

# The demo: a static site and a load-balanced API on http://127.0.0.1:8080/
# (scripts/gateway.py; its first lines list the settings, e.g. LISTEN=0.0.0.0:8080).
run: $(STAMP)
	$(VENV)/bin/trioxy run scripts/gateway.py

test: $(STAMP) deps-test lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff format --check pipeline filters protocols scripts examples tests bench
	$(VENV)/bin/ruff check pipeline filters protocols scripts examples tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(PY) -m pipeline.docgen > docs/filters.md

bench: $(STAMP) deps-bench
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
