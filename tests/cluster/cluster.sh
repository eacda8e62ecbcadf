#!/usr/bin/env bash
# Runs the test cluster: kwokctl's binary runtime with only the binaries build.sh made (real
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler; kwok simulates one node), and a
# real node beside it (realnode.sh: containerd, kubelet, kube-proxy).
#
#   cluster.sh up      start the cluster, or reuse a healthy one, or repair a stopped/broken one;
#                      a cluster made with another configuration (an older cluster.sh) is recreated.
#                      Then the real node; where it cannot run or does not start, the cluster runs
#                      without it and says why (the reason is kept in
#                      $ALIASOP_CACHE/realnode/unavailable)
#   cluster.sh down    delete the cluster and the real node; no process of them is left running
#   cluster.sh status  exit 0 when the API server answers, the kwok node is Ready, the cluster was
#                      made with this configuration, and the real node is Ready, cannot run here,
#                      or did not start at the last `up`
#
# The kubeconfig is written to $ALIASOP_CACHE/kubeconfig (default ~/.cache/aliasop/kubeconfig);
# kwokctl's state lives in $ALIASOP_CACHE/kwok, and ~/.kube/config is never touched.
#
# What the simulated node and pods do is set by kwok Stage objects: the defaults come from
# stages.yaml (applied by every `up`), and tests may add their own at run time.
set -euo pipefail

# The daemons started below must not inherit the caller's open files: a lock the caller holds
# (`flock LOCK make test`) would stay held for as long as the cluster runs.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

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
# A copy of the configuration the cluster was created with (kwokctl reads its configuration only
# when it creates a cluster, so a changed one takes a new cluster).
created_with="$workdir/aliasop-config.yaml"
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

# Every component kwokctl started is still running: /readyz and a Ready node do not show a dead
# kube-controller-manager (it exits when it loses its leader lease, e.g. on an overloaded API
# server), and without it no Deployment ever gets a pod.
components_alive() {
  local pid pids
  pids=$(cluster_pids)
  [ -n "$pids" ] || return 1
  for pid in $pids; do ours "$pid" || return 1; done
}

healthy() {
  config_current && [ -f "$kubeconfig" ] && components_alive &&
    kc get --raw /readyz >/dev/null 2>&1 &&
    node_ready 2>/dev/null && [ "$(server_version 2>/dev/null)" = "$K8S_VERSION" ]
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
# (kwokctl's default is 0.0.0.0) but the API server, which pods on the real node reach through
# the `kubernetes` Service: its endpoint is the address kube-apiserver advertises, this host's
# default-route address, so it listens on every address (clients still need the cluster's
# certificates or a token). Its certificate (kwokctl's) names kubernetes.default.svc and the
# host's addresses. Ports are picked free by kwokctl and kept across restarts.
# enableCRDs: [Stage] makes kwok take its Stages from the API server instead of kwokctl's fixed
# built-in set: kwokctl installs the Stage CRD and no stage at all, stages.yaml holds the defaults
# (apply_stages), and tests can add or remove stages while the cluster runs.
# kwok-controller manages only the nodes annotated kwok.x-k8s.io/node=fake (node.yaml): kwokctl
# runs it with --manage-all-nodes, and it would then also write a fake status and IP for the pods
# of the real node. The API server reaches the real node's kubelet (logs, exec) at its
# InternalIP with the cluster's admin certificate.
# Sized for the 1000-resource benchmark: disableQPSLimits lifts the client-side rate limits of
# kube-controller-manager and kube-scheduler (20 requests/s by default, which made the control
# plane, not the operator, the bottleneck) and the API server's in-flight limits; the Service
# range is a /16 (the API server's default /24 holds 253 Services; every ModelDeployment has one).
# There is one of each component, so no leader election: with the in-flight limits lifted, an API
# server under a burst can take longer than the 5 s lease-renewal deadline, and a
# kube-controller-manager that loses its lease exits (and with it every rollout).
render_config() {
  cat <<YAML
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
  enableCRDs:
  - Stage
  disableQPSLimits: true
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - key: bind-address
    value: 0.0.0.0
    override: true
  - key: service-cluster-ip-range
    value: 10.96.0.0/16
  - key: kubelet-client-certificate
    value: $workdir/pki/admin.crt
  - key: kubelet-client-key
    value: $workdir/pki/admin.key
  - key: kubelet-preferred-address-types
    value: InternalIP,Hostname
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
- name: kube-controller-manager
  extraArgs:
  - key: leader-elect
    value: "false"
- name: kube-scheduler
  extraArgs:
  - key: leader-elect
    value: "false"
YAML
}

write_config() {
  mkdir -p "$KWOK_WORKDIR" && render_config >"$KWOK_WORKDIR/$name.yaml"
}

# Whether the existing cluster was created with the configuration above. A cluster from an older
# cluster.sh has no record of it; kwokctl would keep running that one with its old options.
config_current() { [ -f "$created_with" ] && render_config | cmp -s - "$created_with"; }

# create SECONDS: create the cluster and start it; give up after SECONDS (kwokctl alone may wait
# minutes for a wedged apiserver).
create() {
  write_config || return 1
  # --kubeconfig '' keeps kwokctl away from ~/.kube/config.
  timeout "$1" "$bin/kwokctl" --name "$name" -c "$KWOK_WORKDIR/$name.yaml" \
    create cluster --kubeconfig '' --wait "$1s" || return 1
  cp "$KWOK_WORKDIR/$name.yaml" "$created_with"
}

# restart SECONDS: start the existing cluster's stopped components from the configuration kwokctl
# saved when it created it. Not `create cluster` again: on an existing cluster, kwokctl v0.8.0 then
# re-installs the Stage CRD with an update that lacks a resourceVersion, which the API server
# refuses, and fails after starting everything.
restart() {
  timeout "$1" "$bin/kwokctl" --name "$name" start cluster --wait "$1s"
}

stages_crd_ready() {
  [ "$(kc get crd stages.kwok.x-k8s.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}')" = True ]
}

# The default stages (idempotent: an existing cluster picks up changes to stages.yaml). Server-side
# apply: a client-side one waits about 2 s for the just-installed CRD's OpenAPI schema.
apply_stages() {
  wait_for 60 "the kwok Stage CRD" stages_crd_ready || return 1
  kc apply --server-side --force-conflicts -f "$here/stages.yaml" >/dev/null || return 1
}

# take_over_node_lease SINCE: after a restart, the node's Lease still names the kwok-controller
# that was stopped, and the new one leaves the node and its pods alone until that lease expires
# (kwokctl's nodeLeaseDurationSeconds, 200 s here): meanwhile no pod would start or go away, though
# the node still shows Ready. A lease last renewed by SINCE (epoch seconds) is such a leftover:
# delete it, so the new kwok-controller creates its own at its next try (within a quarter of the
# lease duration), and wait for that.
take_over_node_lease() {
  local renewed
  renewed=$(kc -n kube-node-lease get lease "$node" --ignore-not-found \
    -o 'jsonpath={.spec.renewTime}') || return 1
  if [ -n "$renewed" ] && (($(date -d "$renewed" +%s) <= $1)); then
    log "handing node $node's lease over to the new kwok-controller"
    kc -n kube-node-lease delete lease "$node" --ignore-not-found >/dev/null || return 1
    wait_for 90 "kwok-controller to take node $node's lease" \
      kc -n kube-node-lease get lease "$node" || return 1
  fi
}

# Writes the kubeconfig, registers the node and waits until the cluster can run pods.
# Every step ends in `|| return 1`: up() calls this inside `if`, where `set -e` does not apply.
finish() {
  kwokctl get kubeconfig >"$kubeconfig.tmp" && mv "$kubeconfig.tmp" "$kubeconfig" || return 1
  log "waiting for the API server"
  wait_for 120 "API server /readyz" kc get --raw /readyz || return 1
  log "applying the default kwok stages"
  apply_stages || return 1
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

# Whether pid $1 is a live process running one of our binaries. /proc/PID/exe names the binary's
# real path, so compare with the real path of the binaries' directory (which may be a symlink).
ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ $exe == "$(readlink -m "$cache/cluster")"/*/bin/* ]]
}
gone() { ! ours "$1"; }

down() {
  local pids pid
  # The real node first: its kubelet and kube-proxy talk to this cluster.
  "$here/realnode.sh" down || log "stopping the real node failed (see above)"
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
  local started=$SECONDS
  if [ -d "$workdir" ] && ! config_current; then
    log "cluster $name was created with another configuration (an older cluster.sh): recreating it"
    down
  fi
  if healthy; then
    apply_stages || die "could not apply $here/stages.yaml"
    log "cluster $name already running and healthy ($K8S_VERSION); kubeconfig: $kubeconfig"
  elif [ -d "$workdir" ]; then
    log "cluster $name exists but is not healthy: restarting it"
    local stopped
    stopped=$(date +%s)
    # Stop first: kwokctl only starts components whose pid is not alive, so a wedged or
    # just-killed (zombie) process would otherwise be left in place.
    if ! { kwokctl stop cluster && restart 60 && finish && take_over_node_lease "$stopped"; }; then
      log "restart failed: recreating cluster $name"
      down
      { create 180 && finish; } || fail
    fi
  else
    log "creating cluster $name (kube $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
    { create 180 && finish; } || fail
  fi
  log "cluster $name is up in $((SECONDS - started))s; kubeconfig: $kubeconfig"
  real_node_up
}

# The real node; the cluster runs without it where it cannot run or does not start, saying why
# (tests that need it skip, or fail under ALIASOP_REQUIRE_REAL_NODE=1).
real_node_up() {
  local rc=0
  "$here/realnode.sh" up || rc=$?
  if [ "$rc" != 0 ]; then
    log "the cluster runs without its real node: $(cat "$cache/realnode/unavailable" 2>/dev/null || echo "realnode.sh up exited $rc")"
  fi
}

status() {
  if [ -d "$workdir" ]; then kwokctl get components || true; fi
  if [ -d "$workdir" ] && ! config_current; then
    log "cluster $name was created with another configuration: \`$0 up\` recreates it"
    return 1
  fi
  if healthy; then
    log "healthy: $(server_version), node $node Ready; kubeconfig: $kubeconfig"
  else
    log "not running or not healthy"
    return 1
  fi
  # Ready, or unavailable (3: it cannot run on this machine, or the last `up` could not start
  # it): either way a healthy cluster, which the tests reuse rather than start and stop.
  local rc=0
  "$here/realnode.sh" status || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 3 ]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
