# skyrec: one entry point per action. Each target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
export SKYREC_PROJECT_ROOT := $(CURDIR)
# Every job is its own Python process: letting Python cache bytecode (.pyc) on first import cuts a job's
# start from ~7 s to ~1.5 s. (Compiling the whole venv up front instead would cost minutes.)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: airflow help test-deps setup demo test test-fast lint serve stop bench clean redis chaos

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	@command -v uv >/dev/null 2>&1 || export PATH="$(HOME)/.local/bin:$$PATH"; \
	  uv sync --frozen --extra hybrid --python 3.11 --quiet
	@touch $@

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_NEED = $(strip $(if $(shell command -v redis-server),,redis-server) $(if $(shell command -v redis-cli),,redis-tools))
PG_BINDIR = $(firstword $(wildcard /usr/lib/postgresql/*/bin))
APT_NEED_TEST = $(strip $(APT_NEED) $(if $(shell command -v chromium),,chromium) $(if $(PG_BINDIR),,postgresql))
APT_NEED_BENCH = $(strip $(APT_NEED) $(if $(shell command -v wrk),,wrk))

define apt_install
	@if [ -n "$(1)" ]; then \
	  echo "installing from Debian: $(1)"; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(1) >/dev/null) \
	  || { echo "could not install $(1): run 'apt-get install $(1)' as root"; exit 1; }; \
	fi
endef

redis:  ## install redis-server and redis-tools from Debian when missing
	$(call apt_install,$(APT_NEED))

test-deps:  ## Debian packages the test suite needs (redis-server, redis-tools, chromium, postgresql) when missing
	$(call apt_install,$(APT_NEED_TEST))

setup: $(VENV)/.synced redis  ## uv-managed .venv + redis-server

demo: setup  ## generate sample data, run every DAG through Airflow, serve and query the API
	$(PY) -m skyrec demo $(if $(KEEP_SERVING),--keep-serving,)

test: setup test-deps  ## the whole test suite (unit + integration with real redis-server, Airflow, Beam, moto)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: setup  ## ruff, mypy, import-linter layer contracts
	$(VENV)/bin/ruff check src tests dags benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

serve: setup  ## serve the last published recommendations (starts the local redis-server if needed)
	$(PY) -m skyrec serve --start-redis

airflow: setup  ## skyrec under the real scheduler: Airflow (UI http://127.0.0.1:8090), serving Redis, API; follows the runs (FOLLOW=0: not)
	$(PY) -m skyrec up $(if $(filter 0 no false,$(FOLLOW)),,--follow)

stop:  ## stop what `make airflow`, `make demo KEEP_SERVING=1` or `make serve` left running
	$(PY) -m skyrec down
	$(PY) -m skyrec stop

chaos: setup  ## randomized fault run (docs/chaos.md): kill -9, storage errors, lost responses, Redis restarts, two attempts; tens of minutes
	$(PY) -m skyrec.chaos --min-faults $(or $(FAULTS),200) --runs 80 --faults-per-run 6 --seed $(or $(SEED),1) --report .skyrec/chaos-report.json

bench: setup  ## benchmarks against named peers (installs wrk when missing); writes BENCHMARKS.md figures to .bench/
	$(call apt_install,$(APT_NEED_BENCH))
	$(PY) -m skyrec bench

clean:  ## remove generated data (.skyrec) and caches
	rm -rf .skyrec .pytest_cache .mypy_cache .ruff_cache
