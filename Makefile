# aliasop developer entry points. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ALIASOP_CACHE ?= $(HOME)/.cache/aliasop
KUBECONFIG_PATH := $(ALIASOP_CACHE)/kubeconfig

.PHONY: install cluster-build cluster-up cluster-down test test-unit test-integration lint crds demo demo-down bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "[install] creating $(VENV) and installing aliasop with its test extras"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]'
	touch $@

cluster-build:
	tests/cluster/build.sh

cluster-up: cluster-build
	tests/cluster/cluster.sh up

cluster-down:
	tests/cluster/cluster.sh down

crds: install
	$(BIN)/aliasop crd > crds/aliasop.io_modeldeployments.yaml

test: install cluster-build
	$(BIN)/pytest tests

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install cluster-build
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

demo: install cluster-up
	$(BIN)/aliasop demo

demo-down:
	-$(BIN)/aliasop demo --down
	tests/cluster/cluster.sh down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
