# Runway: `make up` runs the whole stack on a demo dataset, `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCALE ?= 0.01
DATA ?= data/scale-$(SCALE)
SEED ?= 1
SERVICES ?= overview reviews qa

.PHONY: help venv deps bench-deps up down status migrate test test-full lint data load bench bench-quick clean

help:
	@echo "make up [PG_REPLICAS=1] [PG_POOLER=1] [REDIS_CLUSTER=1] | down | status | test | lint | data SCALE=0.01 | load DATA=dir | bench"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

deps:
	bash infra/ensure-deps.sh postgres redis nginx prometheus pgbouncer exporters

# wrk drives the benchmark and one of its tests (a fresh machine has none).
bench-deps:
	bash infra/ensure-deps.sh wrk

# Make passes command-line variables to the stack in its environment:
# PG_REPLICAS=1 (PG_REPLICA_PORT=5433, PG_REPLICA_DELAY_MS=0) adds a streaming
# replica, PG_POOLER=1 (PG_POOLER_PORT=6432) PgBouncer in transaction mode,
# REDIS_CLUSTER=1 (REDIS_CLUSTER_PORT=7000) a Redis Cluster of 3 primaries + 3
# replicas on 7000-7005 (run/redis-cluster/) as the services' REDIS_URL seed.
up: venv deps
	$(PY) -m infra.stack up

# The migrate step (services/common/migrate.py), before the services start:
# each database created if missing, its migrations applied, its app role
# (runway_<service>, DML only) granted; through <SERVICE>_MIGRATE_DATABASE_URL,
# a direct connection (never PgBouncer), else <SERVICE>_DATABASE_URL.
# `make up` runs it itself.
migrate: venv
	$(PY) -m services.common.migrate $(SERVICES)

down: venv
	$(PY) -m infra.stack down

# When the stack runs a Redis Cluster (`make up REDIS_CLUSTER=1`), its state too:
# cluster_state, slots ok, each primary with its slots and replica.
status: venv
	$(PY) -m infra.stack status

# Then the service and e2e suites once more through PgBouncer in transaction
# mode (RUNWAY_TEST_POOLER=1: tests/conftest.py, tests/e2e/conftest.py).
test: venv deps bench-deps
	$(VENV)/bin/ruff check services infra tests bench gateway
	$(VENV)/bin/ruff format --check services infra tests bench gateway
	$(VENV)/bin/pytest -q
	RUNWAY_TEST_POOLER=1 $(VENV)/bin/pytest -q tests/overview tests/reviews tests/qa tests/e2e

# The issue's full counts for the reliability and security suites (a few minutes more).
test-full: venv deps
	RUNWAY_COHERENCE_OPS=10000 RUNWAY_SCHEMATHESIS_REQUESTS=5000 $(VENV)/bin/pytest -q tests/reliability tests/security

lint: venv
	$(VENV)/bin/ruff check services infra tests bench gateway
	$(VENV)/bin/ruff format --check services infra tests bench gateway

# Generate every service's CSV files at SCALE into $(DATA)/<service>/.
data: venv
	@for s in $(SERVICES); do \
		$(PY) -m services.$$s.data.generator --scale $(SCALE) --seed $(SEED) --out $(DATA)/$$s || exit 1; \
	done

# Load $(DATA)/<service>/ (generated, or the real export laid out the same way).
load: venv deps
	@for s in $(SERVICES); do \
		$(PY) -m services.$$s.data.loader --data $(DATA)/$$s --report $(DATA)/reports/$$s || exit 1; \
	done

# The benchmark (bench/README.md): `make bench` is the full run at BENCH_SCALE
# (default 1.0); QUICK=1 a small end-to-end run; SOAK=1 adds the 10-minute soak;
# BENCH_ARGS passes anything else to bench.run (e.g. --services reviews,qa).
bench: venv deps bench-deps
	$(PY) -m bench.run $(if $(QUICK),--quick,--scale $(or $(BENCH_SCALE),1.0)) $(if $(SOAK),--soak) $(BENCH_ARGS)

bench-quick: venv deps bench-deps
	$(PY) -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf run .pytest_cache
