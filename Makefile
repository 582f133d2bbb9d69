# The project's commands. `make test` sets up everything from a fresh machine and runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     := .venv
SAM_VENV := .venv-sam
BENCH_VENV := .venv-bench
LAMBDA_VENV := .venv-lambda
LOCALSTACK_VENV := .venv-localstack
LAMBDA_REQUIREMENTS := infra/localstack_ext/lambda-runtime-requirements.txt
LOCALBUS := $(VENV)/bin/python -m
# the local tooling, installed editable into the venvs: the emulator, the stack, the bus's local wiring
INFRA_PACKAGES := -e infra/samhost -e infra/hoststack -e infra/localbus
INFRA_PYPROJECTS := infra/samhost/pyproject.toml infra/hoststack/pyproject.toml infra/localbus/pyproject.toml
# the layer's and every function's: the suite loads the handlers in-process
FUNCTION_REQUIREMENTS := $(sort $(wildcard functions/*/requirements.txt))

# a long step's progress: what it does when it starts, how long it took when it ends
step_start = @mkdir -p $(dir $@) && printf '==> %s\n' "$(1)" && date +%s > $@.started
step_done = @printf '    done in %s s\n' $$(( $$(date +%s) - $$(cat $@.started) )) && rm -f $@.started

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

$(VENV)/.installed: pyproject.toml $(FUNCTION_REQUIREMENTS) $(INFRA_PYPROJECTS)
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(call step_start,creating $(VENV): the layer's and the functions' requirements + test and lint tools + the local tooling)
	$(PYTHON313) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(VENV)/bin/python -m pip install -q $(addprefix -r ,$(FUNCTION_REQUIREMENTS)) --group dev $(INFRA_PACKAGES)
	$(step_done)
	@touch $@

$(SAM_VENV)/.installed:
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(call step_start,creating $(SAM_VENV): the AWS SAM CLI and samlocal)
	$(PYTHON313) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q 'aws-sam-cli==1.170.0' 'aws-sam-cli-local==1.71.0'
	$(step_done)
	@touch $@

$(BENCH_VENV)/.installed: pyproject.toml $(FUNCTION_REQUIREMENTS) $(INFRA_PYPROJECTS)
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(call step_start,creating $(BENCH_VENV): the functions' requirements + the alternatives the benchmarks compare with)
	$(PYTHON313) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(BENCH_VENV)/bin/python -m pip install -q $(addprefix -r ,$(FUNCTION_REQUIREMENTS)) --group bench $(INFRA_PACKAGES)
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps \
	  opentelemetry-instrumentation-aws-lambda==0.66b1 opentelemetry-instrumentation==0.66b1
	$(step_done)
	@touch $@

# the interpreter the host executor runs functions with (Lambda's python3.13 runtime: awslambdaric + boto3)
$(LAMBDA_VENV)/.installed: $(LAMBDA_REQUIREMENTS)
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	$(call step_start,creating $(LAMBDA_VENV): the Lambda runtime's interpreter (awslambdaric and boto3))
	$(PYTHON313) -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(LAMBDA_VENV)/bin/python -m pip install -q -r $(LAMBDA_REQUIREMENTS)
	$(step_done)
	@touch $@

.PHONY: localstack-venv
localstack-venv: $(VENV)/.installed  ## LocalStack's own venv with the project's plugins (idempotent, ~1 min the first time)
	@$(VENV)/bin/python -c 'import sys; from pathlib import Path; \
	  from samhost.localstack import ensure_localstack_venv; ensure_localstack_venv(Path("$(LOCALSTACK_VENV)"), sys.argv[1])' \
	  "$(PYTHON313)"

.PHONY: setup
setup: system-deps $(VENV)/.installed $(SAM_VENV)/.installed $(LAMBDA_VENV)/.installed localstack-venv  ## install everything

.PHONY: lint
lint: $(VENV)/.installed  ## ruff and mypy (strict on functions/ and infra/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@for handler in functions/*/app.py; do echo "mypy $$handler"; $(VENV)/bin/mypy "$$handler" || exit 1; done

.PHONY: test
test: setup lint  ## the whole suite: lint, types, unit, functional (real servers), SAM, end to end on the local stack
	SAM_CLI=$(abspath $(SAM_VENV))/bin/sam PYTHON313_BIN=$(dir $(PYTHON313)) $(VENV)/bin/pytest

.PHONY: demo
demo: setup  ## the main job: start the local stack, deploy with SAM, send events through it, show traces and metrics
	$(LOCALBUS) localbus.demo $(ARGS)

.PHONY: up
up: setup  ## start the local stack in the background (LocalStack, Kafka, OTLP, Pushgateway, Prometheus, webhook)
	$(LOCALBUS) localbus.stack up

.PHONY: deploy
deploy: setup  ## sam build + samlocal deploy to the running local stack (samconfig.toml [local])
	$(LOCALBUS) localbus.stack deploy

.PHONY: status
status:  ## each piece of the local stack: state, address, pid, log file
	@$(LOCALBUS) localbus.stack status

.PHONY: invoke
invoke:  ## invoke a deployed function with a sample event: make invoke FUNCTION=CdcFunction EVENT=dynamodb_stream_orders
	@$(LOCALBUS) hoststack.invoke $(FUNCTION) $(EVENT)

.PHONY: trace
trace:  ## one trace of the local stack as a waterfall with durations: make trace ID=<trace id>
	@$(LOCALBUS) localbus.trace $(ID)

.PHONY: dashboard-pictures
dashboard-pictures: $(VENV)/.installed  ## draw docs/images/dashboard-*.png from the running stack's Prometheus (after make demo)
	$(LOCALBUS) localbus.dashboard_pictures $(ARGS)

.PHONY: stop
stop:  ## stop the whole local stack (by the PIDs it recorded)
	@$(LOCALBUS) localbus.stack down

.PHONY: faults
faults:  ## the fault matrix against the running stack (make up deploy first): a table row per scenario (ARGS=poison)
	@$(LOCALBUS) localbus.faults $(ARGS)

.PHONY: bench
bench: system-deps $(BENCH_VENV)/.installed  ## benchmarks against Powertools, OTel's Lambda layer, Sentry (ARGS=--quick)
	$(BENCH_VENV)/bin/python tests/perf/bench_layer.py $(ARGS)

.PHONY: bench-delivery
bench-delivery: $(VENV)/.installed  ## the consumer's delivery engine against the sequential baseline (ARGS=--quick)
	$(VENV)/bin/python tests/perf/bench_delivery.py $(ARGS)

.PHONY: bench-stack
bench-stack: $(VENV)/.installed  ## the running local stack under load: req/s, p99, accept-to-delivery, where the time goes
	$(VENV)/bin/python tests/perf/bench_stack.py $(ARGS)

.PHONY: bench-pushgateway
bench-pushgateway: system-deps $(VENV)/.installed  ## the Pushgateway at Lambda scale: 500 and 2,000 groups (ARGS="--groups 100,250 --quick")
	$(VENV)/bin/python tests/perf/bench_pushgateway.py $(ARGS)

.PHONY: clean
clean:  ## remove virtual environments and build output
	rm -rf $(VENV) $(SAM_VENV) $(BENCH_VENV) $(LAMBDA_VENV) $(LOCALSTACK_VENV) .aws-sam .local .pytest_cache .mypy_cache \
	  .ruff_cache .hypothesis
