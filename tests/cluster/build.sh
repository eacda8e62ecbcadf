#!/usr/bin/env bash
# Builds the test cluster from Go modules: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok and kwokctl for the control plane, and kubelet and
# kube-proxy for the real node (see aliasop_dev.cluster.realnode). Binaries go to
# ${ALIASOP_CACHE:-~/.cache/aliasop}/cluster/<k8s-version>/bin; what is already there is skipped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
root="$cache/cluster/$K8S_VERSION"
bin="$root/bin"
mkdir -p "$bin"

# Only the module proxy is reachable here: no checksum database, no toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$HOME/go}

step=0
steps=4
progress() {
  step=$((step + 1))
  echo "[cluster-build $step/$steps] $*  ($(date +%H:%M:%S))"
}
# The commands built from k8s.io/kubernetes (the wrapper module's tools.go imports each).
kube_commands=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
have() {
  local b
  for b in "$@"; do [ -x "$bin/$b" ] || return 1; done
}

build_kubernetes() {
  progress "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy $K8S_VERSION"
  if have "${kube_commands[@]}"; then
    echo "  cached in $bin"; return
  fi
  local mod="$root/src/kubernetes" staging_version minor
  staging_version="v0.${K8S_VERSION#v1.}"          # v1.35.4 -> v0.35.4
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  mkdir -p "$mod"
  echo "  downloading k8s.io/kubernetes@$K8S_VERSION go.mod"
  local upstream_mod
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module aliasop.local/cluster/kubernetes"
    echo
    grep -E '^go ' "$upstream_mod"
    grep -E '^godebug ' "$upstream_mod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module k8s replaces with ./staging/src/k8s.io/X becomes its published tag.
    sed -nE 's#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+$#\1#p' "$upstream_mod" |
      while read -r m; do echo "	$m => $m $staging_version"; done
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  echo "  resolving modules (go mod tidy)"
  (cd "$mod" && go mod tidy)
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in "${kube_commands[@]}"; do
    if have "$cmd"; then continue; fi
    echo "  compiling $cmd (cold: minutes each; kubelet and kube-proxy about 20 s once the others are built)"
    (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
}

build_etcd() {
  progress "etcd $ETCD_VERSION"
  if have etcd; then echo "  cached in $bin"; return; fi
  local mod="$root/src/etcd"
  mkdir -p "$mod"
  cat >"$mod/go.mod" <<GOMOD
module aliasop.local/cluster/etcd

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$mod/main.go" <<'GO'
// Command etcd runs the etcd server from the published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .)
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_kwok() {
  progress "kwok, kwokctl $KWOK_VERSION"
  if have kwok kwokctl; then echo "  cached in $bin"; return; fi
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

started=$(date +%s)
build_etcd
build_kwok
build_kubernetes
progress "done in $(( $(date +%s) - started ))s: $bin"
ls -1 "$bin"
