# Every target creates .venv and installs what it needs on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run run-once test test-all bench chaos migrate status stop clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m workers run

run-once: install
	$(PY) -m workers run --once

test: install
	$(PY) -m pytest -m "not bench and not soak and not slow_chaos" tests

chaos: install
	$(PY) -m pytest -m "chaos or soak or slow_chaos" tests

bench: install
	$(PY) -m pytest -m bench -p no:randomly -q tests/benchmarks

migrate: install
	$(PY) -m workers migrate

status: install
	$(PY) -m workers status

stop: install
	$(PY) -m workers services stop

clean: stop
	rm -rf .data .bench
