#!/usr/bin/env bash
# Builds helm-docs (github.com/norwoodj/helm-docs, GPL-3.0, a build tool only: nothing of it
# ships), which writes charts/aliasop/README.md from the chart's values.yaml and its `# --`
# comments (`make chart-docs`; tests/unit/test_chart_readme.py fails when the README is stale).
# Built from its Go module through the module proxy into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin,
# and rebuilt only when HELM_DOCS_VERSION or the Go version changed (a stamp keeps their hash).
set -euo pipefail

HELM_DOCS_VERSION=v1.14.2

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}

started=$(date +%s)
echo "[helm-docs-build] helm-docs $HELM_DOCS_VERSION  ($(date +%H:%M:%S))"
sum=$(printf '%s\n' "$(go env GOVERSION)" "$HELM_DOCS_VERSION" | sha256sum | cut -d' ' -f1)
stamp="$bin/.helm-docs.sum"
if [ -x "$bin/helm-docs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  echo "  compiling github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  # `go install module@version` builds with helm-docs' own go.mod and go.sum; the version
  # string is set as its release build sets it (goreleaser's main.version).
  tmp="$bin/.helm-docs-build"
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X main.version=${HELM_DOCS_VERSION#v}" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  mv "$tmp/helm-docs" "$bin/helm-docs"
  rmdir "$tmp"
  echo "$sum" >"$stamp"
fi
"$bin/helm-docs" --version
echo "[helm-docs-build] done in $(($(date +%s) - started))s: $bin/helm-docs"
