# aliasop developer entry points. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ALIASOP_CACHE ?= $(HOME)/.cache/aliasop
include tests/cluster/versions.env
CLUSTER_BIN := $(ALIASOP_CACHE)/cluster/$(K8S_VERSION)/bin
# The demo talks to the test cluster with the kubectl built for it.
CLUSTER_ENV := PATH="$(CLUSTER_BIN):$$PATH" KUBECONFIG="$(ALIASOP_CACHE)/kubeconfig"

.PHONY: install cluster-build tools-build node-setup images-setup images test-images lock cluster-up cluster-down test test-fast test-unit test-integration test-containers lint crds chart-docs manifests k8s-schemas demo demo-down bench bench-ha bench-serving release clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	@echo "[install] creating $(VENV) and installing aliasop with its test extras, and aliasop-dev"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]' -e ./dev
	touch $@

cluster-build:
	tests/cluster/build.sh

# kstatus and gopher-lua runners (the integration tests check health as Flux and Argo CD see
# it), the helm CLI (the chart's tests), Prometheus (the analysis providers' tests query it),
# versitygw (the S3 server of the artifact-store tests), helm-docs (the chart's README) and
# CNCF distribution's registry (the OCI registry the release tests push to).
tools-build:
	tests/tools/build.sh
	tests/tools/build-s3.sh
	tests/tools/build-helm-docs.sh
	tests/tools/build-registry.sh

# podman, runc and mmdebstrap from Debian's packages, and the base image the Dockerfile names
# (debian:bookworm-slim, made by mmdebstrap and cached in $(ALIASOP_CACHE)/images).
images-setup:
	images/setup.sh

# aliasop:<version> and aliasop-serving:<version> from the Dockerfile, with podman.
images: images-setup
	images/build.sh

# A release in an OCI registry: both images (REGISTRY/aliasop:<version>,
# REGISTRY/aliasop-serving:<version>) and the chart (oci://REGISTRY/charts/aliasop, its values
# naming REGISTRY). PLAIN_HTTP=1 for a registry without TLS (on loopback, say).
release: images
	@test -n "$(REGISTRY)" || { echo "usage: make release REGISTRY=host[:port][/path]" >&2; exit 2; }
	PLAIN_HTTP=$(PLAIN_HTTP) images/release.sh "$(REGISTRY)"

# The images for `make test` (the container tier, the real node's end-to-end tests), where this
# machine can make them: 0.7 s when they are built. Where images/setup.sh cannot provide
# podman or the base image (not root, no apt-get, no network...) it says why, and the tests that
# need them skip, saying so (or fail, where ALIASOP_REQUIRE_* says they must run). A failed build
# fails.
test-images:
	@if images/setup.sh; then images/build.sh; \
	else echo "[images] not made on this machine: the tests that run them skip"; fi

# The images' lock files (requirements/*.txt, with hashes) from pyproject.toml.
lock: install
	$(BIN)/pip install --quiet 'uv==0.13.9'
	UV=$(BIN)/uv images/lock.sh

# What the test cluster's real node needs from Debian's packages (containerd, runc, CNI plugins,
# iptables...): installed when missing and root; otherwise it says why, and the real node's tests
# skip (they fail under ALIASOP_REQUIRE_REAL_NODE=1, as in CI).
node-setup:
	tests/cluster/node-setup.sh

# The test cluster (aliasop_dev.cluster): kwok's control plane and the real node beside it.
cluster-up: install cluster-build node-setup
	$(BIN)/python -m aliasop_dev.cluster up

cluster-down: install
	$(BIN)/python -m aliasop_dev.cluster down

# The CRD, generated from the pydantic models, in both places it ships: crds/ (kubectl apply -f)
# and the chart's crds/ (helm install); and docs/api-reference.md, generated from the CRD.
# tests/unit/test_crd.py and test_api_reference.py fail when one is stale.
crds: install
	$(BIN)/aliasop crd > crds/aliasop.io_modeldeployments.yaml
	cp crds/aliasop.io_modeldeployments.yaml charts/aliasop/crds/aliasop.io_modeldeployments.yaml
	$(BIN)/python -m aliasop_dev.api_reference

# manifests/aliasop.yaml: the chart rendered with its default values (the kustomize install).
# tests/integration/test_helm.py fails when it is stale.
manifests: install tools-build
	$(BIN)/python -m aliasop_dev.chart

# charts/aliasop/README.md from the chart's values.yaml (its `# --` comments) and
# README.md.gotmpl, by helm-docs. tests/integration/test_chart_readme.py fails when it is stale.
chart-docs: install
	tests/tools/build-helm-docs.sh
	$(BIN)/python -m aliasop_dev.chart --readme

# Kubernetes' core/v1 schemas of the pod settings, from the test cluster's API server; then
# the CRD that embeds them.
k8s-schemas: install cluster-up
	$(CLUSTER_ENV) $(BIN)/python -m aliasop_dev.k8s_schemas
	$(MAKE) crds

# The tests run in TEST_WORKERS parallel pytest-xdist workers (0: in one process), each with
# its own MLflow server and operator (see tests/conftest.py); the slowest 30 are listed at the
# end. See docs/development.md for one tier, one file, one test.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --durations=30

test: install cluster-build tools-build node-setup test-images
	$(PYTEST) tests

# The inner loop: unit and integration tests, without the real node, the images and the demo.
test-fast: install cluster-build tools-build
	$(PYTEST) -m "not real_node and not containers and not demo" tests/unit tests/integration

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install cluster-build tools-build
	$(PYTEST) tests/integration

# The images run as the manifests and the operator run them (podman; see tests/containers).
test-containers: install cluster-build images
	$(BIN)/pytest tests/containers

lint: install
	$(BIN)/ruff check operator dev tests bench
	$(BIN)/ruff format --check operator dev tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

demo: install cluster-up
	$(CLUSTER_ENV) $(BIN)/aliasop-dev demo $(if $(CANARY),--canary)

demo-down: install
	$(BIN)/aliasop-dev demo --down
	$(BIN)/python -m aliasop_dev.cluster down

bench: install cluster-up
	$(CLUSTER_ENV) $(BIN)/python bench/scale.py

# Failover time of two replicas (leader killed 10 times, stopped 5 times), and shard memory.
bench-ha: install cluster-up
	$(CLUSTER_ENV) $(BIN)/python bench/ha.py

bench-serving: install
	$(BIN)/python bench/serving_ready.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
