#!/usr/bin/env bash
# Builds the Go tools the tests use, into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin:
# - gitops-health, which reads aliasop's status with the GitOps tools' own code: its `kstatus`
#   subcommand runs sigs.k8s.io/cli-utils (as Flux waits on resources) and its `argocd`
#   subcommand runs a health.lua in Argo CD's Lua VM. Rebuilt only when the module's go.mod,
#   go.sum or .go files, or the Go version, changed since it was built (a stamp beside it keeps
#   their hash).
# - helm, the real CLI, built from its own module (helm.sh/helm/v3 at HELM_VERSION) the way
#   helm's Makefile builds it (same ldflags), for the chart's tests. Rebuilt only when
#   HELM_VERSION or the Go version changed.
# - Prometheus (build-prometheus.sh, called at the end): the server the analysis providers are
#   tested against; heavy, cached alike.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads. go.sum is committed, so the downloads are still checked against it.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
export GOPATH=${GOPATH:-$HOME/go}

HELM_VERSION=v3.22.0

tool=gitops-health
step=0
steps=4
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
progress "helm $HELM_VERSION"
sum=$(printf '%s\n' "$(go env GOVERSION)" "$HELM_VERSION" | sha256sum | cut -d' ' -f1)
stamp="$bin/.helm.sum"
if [ -x "$bin/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  # helm's Makefile: the version, and the Kubernetes version `helm template` and `helm lint`
  # assume without a cluster (client-go v0.X.Y -> 1.X).
  helm_mod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  k8s_minor=$(sed -nE 's#^\s*k8s\.io/client-go v0\.([0-9]+)\..*#\1#p' "$helm_mod")
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  echo "  compiling helm.sh/helm/v3/cmd/helm@$HELM_VERSION (cold: about 1.5 minutes on 2 cores)"
  # `go install module@version` builds with helm's own go.mod and go.sum; -mod does not apply.
  GOFLAGS=-buildvcs=false GOBIN="$bin/.helm-build" \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$bin/.helm-build/helm" "$bin/helm"
  rmdir "$bin/.helm-build"
  echo "$sum" >"$stamp"
fi
"$bin/helm" version --short

# Prometheus, for the analysis providers' tests: a script of its own (heavy, cached alike).
progress "prometheus"
"$here/build-prometheus.sh"
progress "done in $(($(date +%s) - started))s: $bin"
