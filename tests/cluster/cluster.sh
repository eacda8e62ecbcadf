#!/usr/bin/env bash
# Runs the test control plane: kwokctl's binary runtime with only the binaries build.sh made
# (real etcd, kube-apiserver, kube-controller-manager, kube-scheduler; kwok simulates the node).
#
#   cluster.sh up      start the cluster, or reuse a healthy one, or repair a stopped/broken one
#   cluster.sh down    delete the cluster; no process of it is left running
#   cluster.sh status  exit 0 when the API server answers and the node is Ready
#
# The kubeconfig is written to $ALIASOP_CACHE/kubeconfig (default ~/.cache/aliasop/kubeconfig);
# kwokctl's state lives in $ALIASOP_CACHE/kwok, and ~/.kube/config is never touched.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/cluster/$K8S_VERSION/bin"
name=aliasop
kubeconfig="$cache/kubeconfig"
node=aliasop-node-0

export KWOK_WORKDIR="$cache/kwok"        # kwokctl keeps clusters, pids and logs here
workdir="$KWOK_WORKDIR/clusters/$name"
# kwokctl looks up kubectl on PATH before it would download one.
export PATH="$bin:$PATH"

log() { echo "[cluster] $*  ($(date +%H:%M:%S))"; }
die() { echo "[cluster] error: $*" >&2; exit 1; }

kwokctl() { "$bin/kwokctl" --name "$name" "$@"; }
kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s "$@"; }

# Poll a command until it succeeds or `seconds` pass.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "[cluster] timed out after ${seconds}s: $what" >&2; return 1; }
    sleep 1
  done
}

node_ready() {
  [ "$(kc get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

server_version() { kc get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p'; }

healthy() {
  [ -f "$kubeconfig" ] && kc get --raw /readyz >/dev/null 2>&1 && node_ready 2>/dev/null &&
    [ "$(server_version 2>/dev/null)" = "$K8S_VERSION" ]
}

check_binaries() {
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl; do
    [ -x "$bin/$b" ] || die "missing $bin/$b: run tests/cluster/build.sh (make cluster-build) first"
  done
}

# Every option points at a local file, so kwokctl has nothing to download. kubeVersion tells
# kwokctl which flags the components take (its own default is a newer release).
# kubeAuthorization turns on --authorization-mode=Node,RBAC and the service-account signing keys
# (TokenRequest, kube-controller-manager's token/service-account controllers); kubeAdmission keeps
# the default admission plugins. Both are kwokctl's defaults with a secure port, pinned here
# because the tests depend on them. bindAddress keeps every component off the network
# (kwokctl's default is 0.0.0.0); ports are picked free by kwokctl and kept across restarts.
write_config() {
  mkdir -p "$KWOK_WORKDIR"
  cat >"$KWOK_WORKDIR/$name.yaml" <<YAML
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: $K8S_VERSION
  kubeBinaryPrefix: $bin
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $bin/kwok
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  bindAddress: 127.0.0.1
YAML
}

# create SECONDS: create the cluster, or start an existing one's stopped components from its saved
# configuration; give up after SECONDS (kwokctl alone may wait minutes for a wedged apiserver).
create() {
  write_config || return 1
  # --kubeconfig '' keeps kwokctl away from ~/.kube/config.
  timeout "$1" "$bin/kwokctl" --name "$name" -c "$KWOK_WORKDIR/$name.yaml" \
    create cluster --kubeconfig '' --wait "$1s"
}

# Writes the kubeconfig, registers the node and waits until the cluster can run pods.
# Every step ends in `|| return 1`: up() calls this inside `if`, where `set -e` does not apply.
finish() {
  kwokctl get kubeconfig >"$kubeconfig.tmp" && mv "$kubeconfig.tmp" "$kubeconfig" || return 1
  log "waiting for the API server"
  wait_for 120 "API server /readyz" kc get --raw /readyz || return 1
  log "registering node $node"
  wait_for 60 "apply node" kc apply -f "$here/node.yaml" || return 1
  wait_for 120 "node $node Ready" node_ready || return 1
  # The default ServiceAccount appears once kube-controller-manager is working.
  wait_for 120 "default ServiceAccount" kc -n default get serviceaccount default || return 1
  if ! healthy; then
    echo "[cluster] up but not healthy: server $(server_version), want $K8S_VERSION" >&2
    return 1
  fi
}

# The pids kwokctl recorded for the cluster's processes (one file each, without a newline).
cluster_pids() {
  local f
  for f in "$workdir"/pids/*.pid; do [ -f "$f" ] && echo "$(<"$f")"; done
  return 0
}

# Whether pid $1 is a live process running one of our binaries.
ours() { [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$cache"/cluster/*/bin/* ]]; }
gone() { ! ours "$1"; }

down() {
  local pids pid
  pids=$(cluster_pids)
  if [ -d "$workdir" ]; then
    log "deleting cluster $name"
    # kwokctl removes the cluster's context from --kubeconfig (it rejects ''); ours is rewritten
    # on every `up` and removed below anyway.
    kwokctl delete cluster --kubeconfig "$kubeconfig" || log "kwokctl delete failed; cleaning up by hand"
  fi
  # kwokctl kills by pid file; make sure none of those processes outlives the cluster, but only
  # kill a pid that still runs one of our binaries (a stale pid file may name someone else).
  for pid in $pids; do
    if ours "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  for pid in $pids; do wait_for 10 "process $pid to exit" gone "$pid"; done
  rm -rf "$workdir" "$kubeconfig"
  log "cluster $name is down"
}

# Start failed for good: show why, then leave nothing running behind.
fail() {
  echo "[cluster] error: could not start cluster $name; the end of its logs:" >&2
  tail -n 15 "$workdir"/logs/*.log >&2 || true
  down
  exit 1
}

up() {
  check_binaries
  if healthy; then
    log "cluster $name already running and healthy ($K8S_VERSION); kubeconfig: $kubeconfig"
    return
  fi
  local started=$SECONDS
  if [ -d "$workdir" ]; then
    log "cluster $name exists but is not healthy: restarting it"
    # Stop first: kwokctl only starts components whose pid is not alive, so a wedged or
    # just-killed (zombie) process would otherwise be left in place.
    if ! { kwokctl stop cluster && create 60 && finish; }; then
      log "restart failed: recreating cluster $name"
      down
      { create 180 && finish; } || fail
    fi
  else
    log "creating cluster $name (kube $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
    { create 180 && finish; } || fail
  fi
  log "cluster $name is up in $((SECONDS - started))s; kubeconfig: $kubeconfig"
}

status() {
  if [ -d "$workdir" ]; then kwokctl get components || true; fi
  if healthy; then
    log "healthy: $(server_version), node $node Ready; kubeconfig: $kubeconfig"
  else
    log "not running or not healthy"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
