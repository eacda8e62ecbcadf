#!/usr/bin/env bash
# Builds helm-docs (github.com/norwoodj/helm-docs, GPL-3.0, a build tool only: nothing of it
# ships), which writes charts/aliasop/README.md from the chart's values.yaml and its `# --`
# comments (`make chart-docs`; tests/unit/test_chart_readme.py fails when the README is stale).
# Built from its Go module through the module proxy into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin,
# and rebuilt only when HELM_DOCS_VERSION or the Go version changed (a stamp keeps their hash).
set -euo pipefail

HELM_DOCS_VERSION=v1.14.2

# shellcheck source=tests/tools/go-install.sh
source "$(dirname "$0")/go-install.sh"
# The version string as helm-docs' release build sets it (goreleaser's main.version).
go_install_tool helm-docs-build helm-docs "$HELM_DOCS_VERSION" \
  github.com/norwoodj/helm-docs/cmd/helm-docs "-X main.version=${HELM_DOCS_VERSION#v}"
"$bin/helm-docs" --version
