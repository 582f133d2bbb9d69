# The project's commands. `make test` sets up everything from a fresh machine and runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     := .venv
SAM_VENV := .venv-sam
BENCH_VENV := .venv-bench
LAYER_REQUIREMENTS := functions/observability_layer/requirements.txt
# the layer's and every function's: the suite loads the handlers in-process
FUNCTION_REQUIREMENTS := $(sort $(wildcard functions/*/requirements.txt))

# Python 3.13 is the Lambda runtime. pyenv's shim answers `python3.13` only when 3.13 is a global version,
# so fall back to the interpreter inside pyenv's versions folder.
PYTHON313 ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null \
                || ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -1)

.PHONY: help
help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: system-deps
system-deps:  ## Debian packages for the local servers (only when root and missing)
	@if command -v prometheus-pushgateway >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing prometheus-pushgateway and prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus-pushgateway prometheus >/dev/null; \
	else echo "error: install prometheus-pushgateway and prometheus (Debian packages), or run as root" >&2; exit 1; fi

$(VENV)/.installed: pyproject.toml $(FUNCTION_REQUIREMENTS)
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(PYTHON313) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(VENV)/bin/python -m pip install -q $(addprefix -r ,$(FUNCTION_REQUIREMENTS)) --group dev
	@touch $@

$(SAM_VENV)/.installed:
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(PYTHON313) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q 'aws-sam-cli==1.170.0'
	@touch $@

$(BENCH_VENV)/.installed: pyproject.toml $(LAYER_REQUIREMENTS)
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(PYTHON313) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(BENCH_VENV)/bin/python -m pip install -q -r $(LAYER_REQUIREMENTS) --group bench
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps \
	  opentelemetry-instrumentation-aws-lambda==0.66b1 opentelemetry-instrumentation==0.66b1
	@touch $@

.PHONY: setup
setup: system-deps $(VENV)/.installed $(SAM_VENV)/.installed  ## install everything the suite needs

.PHONY: lint
lint: $(VENV)/.installed  ## ruff and mypy (strict on functions/ and infra/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@for handler in functions/*/app.py; do echo "mypy $$handler"; $(VENV)/bin/mypy "$$handler" || exit 1; done

.PHONY: test
test: setup lint  ## the whole suite: lint, types, unit, functional (real servers), SAM checks
	SAM_CLI=$(abspath $(SAM_VENV))/bin/sam PYTHON313_BIN=$(dir $(PYTHON313)) $(VENV)/bin/pytest

.PHONY: demo
demo: setup  ## the main job: local servers, events through the layer, then traces and metrics (ARGS=--keep)
	PYTHONPATH=infra:functions/observability_layer $(VENV)/bin/python -m localbus.demo $(ARGS)

.PHONY: stop
stop:  ## stop the servers a `make demo ARGS=--keep` left running
	PYTHONPATH=infra:functions/observability_layer $(VENV)/bin/python -c 'from localbus.demo import stop_kept; stop_kept()'

.PHONY: bench
bench: system-deps $(BENCH_VENV)/.installed  ## benchmarks against Powertools, OTel's Lambda layer, Sentry (ARGS=--quick)
	$(BENCH_VENV)/bin/python tests/perf/bench_layer.py $(ARGS)

.PHONY: clean
clean:  ## remove virtual environments and build output
	rm -rf $(VENV) $(SAM_VENV) $(BENCH_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
