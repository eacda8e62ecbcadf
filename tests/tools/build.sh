#!/usr/bin/env bash
# Builds the Go tools the tests use. Prometheus (build-prometheus.sh, called at the end) is the
# server the analysis providers are tested against. gitops-health reads aliasop's status with
# the GitOps tools' own code: its `kstatus` subcommand runs sigs.k8s.io/cli-utils (as Flux waits on
# resources) and its `argocd` subcommand runs a health.lua in Argo CD's Lua VM. The binaries go
# to ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin. gitops-health is rebuilt only when its module's go.mod,
# go.sum or .go files, or the Go version, changed since it was built (a stamp beside it keeps
# their hash).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads. go.sum is committed, so the downloads are still checked against it.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
export GOPATH=${GOPATH:-$HOME/go}

tool=gitops-health
step=0
steps=3
progress() {
  step=$((step + 1))
  echo "[tools-build $step/$steps] $*  ($(date +%H:%M:%S))"
}

started=$(date +%s)
progress "$tool"
src="$here/$tool"
sum=$( { go env GOVERSION; cat "$src/go.mod" "$src/go.sum" "$src"/*.go; } | sha256sum | cut -d' ' -f1)
stamp="$bin/.$tool.sum"
if [ -x "$bin/$tool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  echo "  compiling $src"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/$tool.tmp" .)
  mv "$bin/$tool.tmp" "$bin/$tool"
  echo "$sum" >"$stamp"
fi
# Prometheus, for the analysis providers' tests: a script of its own (heavy, cached alike).
progress "prometheus"
"$here/build-prometheus.sh"
progress "done in $(($(date +%s) - started))s: $bin"
