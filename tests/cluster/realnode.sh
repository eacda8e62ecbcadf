#!/usr/bin/env bash
# The test cluster's real node, beside the kwok one: containerd (runc, cgroupfs), a kubelet
# registered as node aliasop-real-0, a CNI bridge for its pods, and kube-proxy (iptables mode) so
# that Service ClusterIPs route to them. cluster.sh runs this after the control plane is up.
#
#   realnode.sh up       start what is not running (or repair what died); exit 3 when the node
#                        cannot run on this machine or does not start, the reason also written to
#                        $home/unavailable
#   realnode.sh down     stop it all: pods' containers and network namespaces, the node object,
#                        kube-proxy's iptables chains, the bridge; the kernel settings the kubelet
#                        changed are put back
#   realnode.sh status   exit 0 when the node is Ready and every part runs, 3 when it cannot run
#                        here or the last `up` could not start it (the reason printed), 1 otherwise
#   realnode.sh import ARCHIVE   import an image archive (docker or OCI, e.g. `podman save`) into
#                        the node's containerd; pods then use it with imagePullPolicy Never
#
# The node is tainted aliasop.io/real-node=true:NoSchedule and labelled aliasop.io/real-node=true:
# only pods that tolerate the taint and select the label run here. No registry is needed: the
# pause image (pause.c) and the smoke-test image (busybox from Debian's busybox-static) are
# built here and imported. Everything lives under $ALIASOP_CACHE/realnode; the bridge, the pod
# subnet and the ports are chosen free per cache. kube-proxy's iptables chains (KUBE-*) are
# host-wide, so one real node runs per host at a time: /run/aliasop-real-node names the cache
# that holds it. ALIASOP_REAL_NODE=0 turns the real node off.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/cluster/$K8S_VERSION/bin"
kubeconfig="$cache/kubeconfig"
pki="$cache/kwok/clusters/aliasop/pki"
node=aliasop-real-0
taint_key=aliasop.io/real-node
home="$cache/realnode"  # kept by down: the images built here, busybox
run="$home/run"         # made by up, removed by down
unavailable="$home/unavailable"
# Made by an `up` that passed the checks and still failed, removed by the next `up`.
failed="$home/failed"
host_owner=/run/aliasop-real-node
sock="$run/containerd/containerd.sock"
cni_bin=/usr/lib/cni
# What pods on the node use; tests/node/realnode.py names the smoke image too.
pause_image=localhost/aliasop/pause:1
smoke_image=localhost/aliasop/smoke:1
# The kernel settings the kubelet sets at start (protectKernelDefaults: false), and the one this
# script sets (bridged traffic through iptables: a pod's request to a Service whose pod is on
# the same bridge, itself included, is DNATed and answered back through kube-proxy's rules);
# down restores them.
kernel_settings=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.bridge.bridge-nf-call-iptables)

# Chosen per start by settings(), kept in $run/settings.env.
subnet='' node_ip='' bridge='' kubelet_port='' kubelet_healthz='' proxy_healthz='' proxy_metrics=''

log() { echo "[realnode] $*  ($(date +%H:%M:%S))"; }
die() { echo "[realnode] error: $*" >&2; exit 1; }
# The real node cannot run on this machine: say why, remember it, exit 3.
cannot() {
  mkdir -p "$home" && echo "$*" >"$unavailable"
  echo "[realnode] the real node cannot run here: $*" >&2
  exit 3
}

kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s "$@"; }
ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }

wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "[realnode] timed out after ${seconds}s: $what" >&2; return 1; }
    sleep 1
  done
}

# up's EXIT trap once the machine passed the checks: an early end (a part that did not start,
# cannot, an unexpected error) is a failed start. Exit 3 as where the node cannot run, with the
# reason kept, and $failed makes status answer 3 as well: a control plane that runs is healthy
# without its real node, until an `up` starts it.
failed_start() {
  local rc=$?
  trap - EXIT
  ((rc != 0)) || return 0
  # Exit 3 comes with its reason written.
  [ "$rc" = 3 ] || echo "realnode.sh up failed (exit $rc; logs: $run/logs)" >"$unavailable"
  touch "$failed"
  exit 3
}

# --- what this machine needs ---------------------------------------------------------------

prerequisites() {
  [ "${ALIASOP_REAL_NODE:-1}" != 0 ] || cannot "turned off (ALIASOP_REAL_NODE=0)"
  [ "$(uname -s)" = Linux ] || cannot "it needs Linux"
  [ "$(id -u)" = 0 ] || cannot "containerd, the kubelet and kube-proxy need root"
  local b missing=()
  for b in kubelet kube-proxy kubectl; do [ -x "$bin/$b" ] || missing+=("$bin/$b"); done
  [ ${#missing[@]} -eq 0 ] || cannot "missing ${missing[*]}: run tests/cluster/build.sh (make cluster-build)"
  for b in containerd containerd-shim-runc-v2 ctr runc iptables ip ss sysctl pgrep curl gcc; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  for b in bridge host-local loopback; do [ -x "$cni_bin/$b" ] || missing+=("$cni_bin/$b"); done
  [ ${#missing[@]} -eq 0 ] ||
    cannot "missing ${missing[*]}: run tests/cluster/node-setup.sh (Debian's packages)"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || cannot "no cgroup filesystem at /sys/fs/cgroup"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    cannot "the kernel has no overlay filesystem (containerd's snapshotter)"
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null ||
    cannot "the kernel has no br_netfilter (bridged pod traffic through kube-proxy's rules)"
  if [ ! -f "$kubeconfig" ] || [ ! -f "$pki/ca.crt" ]; then die "no cluster at $kubeconfig: run cluster.sh up"; fi
}

# The host's one real node (kube-proxy's chains are host-wide): free unless another cache's node
# is running; claim_host takes it.
host_free() {
  local other
  other=$(cat "$host_owner" 2>/dev/null || true)
  if [ -n "$other" ] && [ "$other" != "$home" ] && running_in "$other"; then
    cannot "the real node of $other runs on this host (one at a time: kube-proxy's iptables chains are host-wide); stop it with ALIASOP_CACHE=$(dirname "$other") tests/cluster/cluster.sh down"
  fi
}
claim_host() { host_free && echo "$home" >"$host_owner"; }

# Whether any process of the real node kept under $1 is alive.
running_in() {
  local name
  for name in containerd kubelet kube-proxy; do alive "$1" "$name" && return 0; done
  return 1
}

# --- settings chosen once per start: pod subnet, bridge, ports -------------------------------

# A /24 in 10.245.0.0/16 with no route or address of this host in it; the kwok node's pods have
# 10.244.0.0/16 (fake: no routes) and Services 10.96.0.0/16.
pick_subnet() {
  local n start
  start=$(($(cksum <<<"$home" | cut -d' ' -f1) % 250))
  for ((n = start; n < start + 250; n++)); do
    local s="10.245.$((n % 250)).0/24"
    if [ -z "$(ip -4 route show root "$s")" ] && [ -z "$(ip -4 -o addr show to "$s")" ]; then
      echo "$((n % 250))"; return
    fi
  done
  return 1
}

# A TCP port nobody listens on, below the NodePort range; not one of "$@".
pick_port() {
  local p
  for ((p = 29999; p > 29000; p--)); do
    [[ " $* " == *" $p "* ]] && continue
    [ -z "$(ss -Htln "sport = :$p")" ] && { echo "$p"; return; }
  done
  return 1
}

settings() {
  if [ ! -f "$run/settings.env" ]; then
    local n p ports=()
    n=$(pick_subnet) || cannot "no free /24 in 10.245.0.0/16 for the pods"
    while [ ${#ports[@]} -lt 4 ]; do
      p=$(pick_port "${ports[@]}") || cannot "no free TCP ports in 29001-29999"
      ports+=("$p")
    done
    mkdir -p "$run"
    cat >"$run/settings.env" <<ENV
subnet=10.245.$n.0/24
node_ip=10.245.$n.1
bridge=aliasop$n
kubelet_port=${ports[0]}
kubelet_healthz=${ports[1]}
proxy_healthz=${ports[2]}
proxy_metrics=${ports[3]}
ENV
  fi
  # shellcheck source=/dev/null
  source "$run/settings.env"
}

# --- processes ------------------------------------------------------------------------------

pidfile() { echo "$1/run/pids/$2.pid"; }

# alive HOME NAME: the process NAME of the real node under HOME runs (its command line names its
# configuration under HOME/run, so a stale pid file naming someone else does not count).
alive() {
  local pid
  pid=$(cat "$(pidfile "$1" "$2")" 2>/dev/null) || return 1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1/run/"
}

# start NAME COMMAND...: run a daemon in its own session, logging to $run/logs/NAME.log.
start() {
  local name=$1; shift
  mkdir -p "$run/pids" "$run/logs"
  # 9>&-: the daemon does not inherit (and so hold) this script's lock.
  setsid "$@" >>"$run/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$(pidfile "$home" "$name")"
}

# stop NAME: SIGTERM, then SIGKILL after 15 s.
stop() {
  local pid
  alive "$home" "$1" || { rm -f "$(pidfile "$home" "$1")"; return 0; }
  pid=$(cat "$(pidfile "$home" "$1")")
  kill "$pid" 2>/dev/null || true
  if ! wait_for 15 "$1 to exit" not_alive "$1"; then
    kill -9 "$pid" 2>/dev/null || true
    wait_for 5 "$1 to exit after SIGKILL" not_alive "$1" || true
  fi
  rm -f "$(pidfile "$home" "$1")"
}
not_alive() { ! alive "$home" "$1"; }

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

# --- images ---------------------------------------------------------------------------------

# blob DIR FILE: move FILE into the OCI layout DIR under its digest; print "digest size".
blob() {
  local digest size
  digest=$(sha256sum "$2" | cut -d' ' -f1)
  size=$(stat -c %s "$2")
  mv "$2" "$1/blobs/sha256/$digest"
  echo "$digest $size"
}

# oci_image NAME ROOTFS CONFIG OUT: write a one-layer OCI image archive of directory ROOTFS,
# named NAME, with image CONFIG (the JSON of its "config" field); OUT.digest gets the manifest
# digest. Deterministic: the same files give the same digest.
oci_image() {
  local name=$1 rootfs=$2 config=$3 out=$4 dir
  local layer_digest layer_size config_digest config_size manifest_digest manifest_size
  dir=$(mktemp -d)
  mkdir -p "$dir/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$rootfs" -cf "$dir/layer" .
  read -r layer_digest layer_size <<<"$(blob "$dir" "$dir/layer")"
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(dpkg --print-architecture)" "$config" "$layer_digest" >"$dir/config"
  read -r config_digest config_size <<<"$(blob "$dir" "$dir/config")"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$dir/manifest"
  read -r manifest_digest manifest_size <<<"$(blob "$dir" "$dir/manifest")"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$name" "${name##*:}" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  tar -C "$dir" -cf "$out" oci-layout index.json blobs
  echo "sha256:$manifest_digest" >"$out.digest"
  rm -rf "$dir"
}

# $home/busybox: busybox from Debian's busybox-static, unpacked from its .deb (installing the
# package would replace a machine's busybox).
fetch_busybox() {
  local deb_dir="$home/debs"
  if [ ! -x "$home/busybox" ]; then
    mkdir -p "$deb_dir"
    # Once more after apt-get update: a machine's package lists may be empty.
    (cd "$deb_dir" && apt-get download busybox-static >/dev/null 2>&1) ||
      (apt-get update -qq && cd "$deb_dir" && apt-get download busybox-static >/dev/null 2>&1) ||
      cannot "could not download Debian's busybox-static (apt-get download busybox-static)"
    local tmp
    tmp=$(mktemp -d)
    dpkg-deb -x "$deb_dir"/busybox-static_*.deb "$tmp"
    install -m 0755 "$tmp/bin/busybox" "$home/busybox"
    rm -rf "$tmp"
  fi
}

# The pause image from pause.c and the smoke-test image (busybox: sh, httpd, nc, id, touch...;
# not its wget, which crashes in Debian's static build),
# rebuilt when pause.c or this script change.
build_images() {
  local images="$home/images" stamp
  stamp=$(cat "$here/pause.c" "$0" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$images/stamp" 2>/dev/null)" = "$stamp" ]; then return; fi
  log "building the pause and smoke-test images"
  rm -rf "$images" && mkdir -p "$images/pause/rootfs" "$images/smoke/rootfs/bin" "$images/smoke/rootfs/tmp"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$images/pause/rootfs/pause" "$here/pause.c" ||
    cannot "gcc could not build a static pause from pause.c (is libc6-dev installed?)"
  oci_image "$pause_image" "$images/pause/rootfs" '{"Entrypoint":["/pause"]}' "$images/pause.tar"
  local applet
  fetch_busybox
  cp "$home/busybox" "$images/smoke/rootfs/bin/busybox"
  for applet in sh httpd nc id touch cat echo hostname sleep ls; do
    ln -s busybox "$images/smoke/rootfs/bin/$applet"
  done
  chmod 1777 "$images/smoke/rootfs/tmp"
  oci_image "$smoke_image" "$images/smoke/rootfs" '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}' \
    "$images/smoke.tar"
  echo "$stamp" >"$images/stamp"
}

# import_image NAME ARCHIVE: import into containerd unless the same digest is there.
import_image() {
  if ctr images ls "name==$1" | grep -qF "$(cat "$2.digest")"; then return; fi
  ctr images import "$2" >/dev/null
}

# --- containerd -----------------------------------------------------------------------------

containerd_config() {
  local state="$run/containerd"
  cat <<TOML
# Written by tests/cluster/realnode.sh: the real node's containerd, with its own socket and
# directories. restrict_oom_score_adj: the kubelet asks -998 for pod sandboxes, which this kind
# of machine refuses ("can't get final child's PID from pipe"). Network namespaces and runc's
# state stay under the state directory, so down finds them all.
version = 2
root = "$state/root"
state = "$state/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$state/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$state/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$run/cni/net.d"
    max_conf_num = 1
TOML
}

# The pods' network: a bridge with the node's address, host-local addresses from the subnet, a
# default route through the node (Service ClusterIPs are reached that way), no masquerading
# (pods talk to the host, to Services and to each other; nothing needs more).
cni_config() {
  cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$run/cni/ipam"
      }
    }
  ]
}
JSON
}

containerd_ready() { ctr version; }

# current FILE COMMAND...: FILE holds what COMMAND prints (a part runs with the configuration
# this script writes today; one that changed restarts the part).
current() {
  local file=$1; shift
  [ -f "$file" ] && [ "$(cat "$file")" = "$("$@")" ]
}

start_containerd() {
  mkdir -p "$run/containerd" "$run/cni/net.d"
  # containerd reads the CNI configuration anew when it changes.
  current "$run/cni/net.d/10-aliasop.conflist" cni_config || cni_config >"$run/cni/net.d/10-aliasop.conflist"
  if alive "$home" containerd && containerd_ready >/dev/null 2>&1 &&
    current "$run/containerd/config.toml" containerd_config; then
    return
  fi
  stop containerd
  log "starting containerd ($sock)"
  containerd_config >"$run/containerd/config.toml"
  start containerd containerd --config "$run/containerd/config.toml"
  wait_for 30 "containerd to answer on $sock" containerd_ready || return 1
}

# The bridge exists before the kubelet starts: its address is the node's, where the kubelet
# listens (reachable from this host and the pods only) and the API server reaches it.
ensure_bridge() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
  fi
  ip -4 addr show dev "$bridge" | grep -qF " $node_ip/" || ip addr add "$node_ip/24" dev "$bridge"
  ip link set "$bridge" up
}

# --- kubelet and kube-proxy -----------------------------------------------------------------

kubelet_config() {
  cat <<YAML
# Written by tests/cluster/realnode.sh. failCgroupV1: this kind of machine has v1/hybrid
# cgroups, which Kubernetes 1.35 refuses otherwise; cgroupsPerQOS, enforceNodeAllocatable,
# localStorageCapacityIsolation off: no QOS cgroup tree nor disk accounting to manage. No
# eviction and no image garbage collection: the images here cannot be pulled again.
# The API server reaches the kubelet (logs, exec) with the cluster's admin certificate.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
localStorageCapacityIsolation: false
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: $run/kubelet/pod-logs
maxPods: 30
registerWithTaints:
- {key: $taint_key, value: "true", effect: NoSchedule}
YAML
}

kube_proxy_config() {
  cat <<YAML
# Written by tests/cluster/realnode.sh. Leaves the host's conntrack settings alone; NodePorts
# only on the node's address.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $node
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
clusterCIDR: $subnet
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$node_ip/32"]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {minSyncPeriod: 1s, syncPeriod: 30s, localhostNodePorts: false}
YAML
}

# Which cluster the kubelet and kube-proxy were started for: a recreated cluster has a new CA.
cluster_id() { sha256sum <"$pki/ca.crt" | cut -d' ' -f1; }

node_ready() {
  [ "$(kc get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# node_ready_since EPOCH: Ready, as reported by a kubelet at EPOCH or later (a restarted kubelet's
# node still shows its predecessor's Ready for a while).
node_ready_since() {
  local heartbeat
  node_ready || return 1
  heartbeat=$(kc get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  (($(date -d "$heartbeat" +%s) >= $1))
}

save_kernel_settings() {
  [ -f "$home/kernel-settings" ] && return
  local k
  for k in "${kernel_settings[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$home/kernel-settings"
}

restore_kernel_settings() {
  [ -f "$home/kernel-settings" ] || return 0
  local line
  while read -r line; do sysctl -q -w "$line" >/dev/null || true; done <"$home/kernel-settings"
  rm -f "$home/kernel-settings"
}

start_kubelet() {
  if [ "$(cat "$run/cluster-id" 2>/dev/null)" != "$(cluster_id)" ]; then
    stop kubelet; stop kube-proxy
  fi
  # A kubelet whose node object is gone (deleted, or a new cluster) does not register again.
  local since=0
  if ! { alive "$home" kubelet && http_ok "http://127.0.0.1:$kubelet_healthz/healthz" &&
    current "$run/kubelet/config.yaml" kubelet_config && kc get node "$node" >/dev/null 2>&1; }; then
    stop kubelet
    since=$(date +%s)
    log "starting the kubelet: node $node ($node_ip, pods $subnet)"
    mkdir -p "$run/kubelet"
    kubelet_config >"$run/kubelet/config.yaml"
    cluster_id >"$run/cluster-id"
    save_kernel_settings
    sysctl -q -w net.bridge.bridge-nf-call-iptables=1
    start kubelet "$bin/kubelet" --config "$run/kubelet/config.yaml" --kubeconfig "$kubeconfig" \
      --root-dir "$run/kubelet/root" --cert-dir "$run/kubelet/pki" --hostname-override "$node" \
      --node-ip "$node_ip" --node-labels "$taint_key=true"
  fi
  wait_for 90 "node $node Ready" node_ready_since "$since" || return 1
}

start_kube_proxy() {
  if alive "$home" kube-proxy && http_ok "http://127.0.0.1:$proxy_healthz/healthz" &&
    current "$run/kube-proxy.yaml" kube_proxy_config; then
    return
  fi
  stop kube-proxy
  log "starting kube-proxy (iptables)"
  kube_proxy_config >"$run/kube-proxy.yaml"
  start kube-proxy "$bin/kube-proxy" --config "$run/kube-proxy.yaml"
  wait_for 60 "kube-proxy healthy" http_ok "http://127.0.0.1:$proxy_healthz/healthz" || return 1
}

# --- commands -------------------------------------------------------------------------------

healthy() {
  [ -f "$run/settings.env" ] || return 1
  settings
  current "$run/containerd/config.toml" containerd_config &&
    current "$run/cni/net.d/10-aliasop.conflist" cni_config &&
    current "$run/kubelet/config.yaml" kubelet_config &&
    current "$run/kube-proxy.yaml" kube_proxy_config &&
    alive "$home" containerd && containerd_ready >/dev/null 2>&1 &&
    alive "$home" kubelet && http_ok "http://127.0.0.1:$kubelet_healthz/healthz" &&
    [ "$(cat "$run/cluster-id" 2>/dev/null)" = "$(cluster_id)" ] && node_ready 2>/dev/null &&
    alive "$home" kube-proxy && http_ok "http://127.0.0.1:$proxy_healthz/healthz"
}

# The end of each part's log, when a start fails.
show_logs() {
  local f
  for f in "$run"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "--- $f" >&2
    tail -n 8 "$f" >&2
  done
}

up() {
  local started=$SECONDS
  mkdir -p "$home"
  exec 9>"$home/lock"
  flock -w 120 9 || die "another realnode.sh (or a process it started) has held $home/lock for 2 minutes"
  rm -f "$failed"
  prerequisites
  claim_host
  trap failed_start EXIT
  local was_healthy=false
  if healthy; then was_healthy=true; fi
  settings
  # Each step leaves alone what is already right (images included: one changed is imported).
  build_images
  ensure_bridge
  if ! { start_containerd && import_image "$pause_image" "$home/images/pause.tar" &&
    import_image "$smoke_image" "$home/images/smoke.tar" && start_kubelet && start_kube_proxy; }; then
    show_logs
    echo "could not start (logs: $run/logs)" >"$unavailable"
    echo "[realnode] error: could not start the real node; logs in $run/logs" >&2
    exit 3
  fi
  trap - EXIT
  rm -f "$unavailable"
  if $was_healthy; then
    log "node $node already running and Ready"
  else
    log "node $node Ready in $((SECONDS - started))s (pods $subnet on bridge $bridge)"
  fi
}

# The pods on the node deleted through the API server: the kubelet stops them as it would any
# (CNI DEL, containers stopped), within 30 s.
drain() {
  if [ -f "$kubeconfig" ] && alive "$home" kubelet && alive "$home" containerd &&
    kc delete pods --all-namespaces --field-selector "spec.nodeName=$node" --grace-period=0 \
      --force --wait=false >/dev/null 2>&1; then
    wait_for 30 "the kubelet to stop the node's pods" no_running_tasks || true
  fi
}
no_running_tasks() { ! ctr tasks ls | awk 'NR > 1 && $3 == "RUNNING"' | grep -q .; }

# Kill every container and sandbox still in the node's containerd and delete them (their rootfs
# and shm mounts go with them), with what CNI and the kubelet keep outside the node's directory.
remove_containers() {
  local ids id f
  ids=$(ctr containers ls -q 2>/dev/null || true)
  for id in $ids; do
    rm -f /var/lib/cni/results/*-"$id"-*
  done
  for f in /var/log/containers/*.log; do
    if [[ $(readlink "$f") == "$run/"* ]]; then rm -f "$f"; fi
  done
  ids=$(ctr tasks ls -q 2>/dev/null || true)
  for id in $ids; do ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $ids; do
    wait_for 10 "task $id to stop" task_stopped "$id" || true
    ctr tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr containers ls -q 2>/dev/null || true); do
    ctr containers delete "$id" >/dev/null 2>&1 || true
  done
}
# What kube-proxy --cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, which drops
# non-local packets to 127.0.0.0/8, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT). The rules that jump
# to a KUBE-* chain go first, then the chains. Only the host's one real node makes KUBE-* chains.
remove_kube_chains() {
  local ipt table rule chain
  for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
      # Each rule as iptables-save quotes it (comments), undone with -D.
      while read -r rule; do
        eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
      done < <("$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A [^ ]+ .*-j KUBE-' | grep -v '^-A KUBE-' || true)
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

task_stopped() { ! ctr tasks ls | awk '$3 == "RUNNING" {print $1}' | grep -qx "$1"; }

down() {
  [ -d "$home" ] || return 0
  exec 9>"$home/lock"
  flock -w 120 9 || die "another realnode.sh (or a process it started) has held $home/lock for 2 minutes"
  if [ -f "$run/settings.env" ]; then
    # shellcheck source=/dev/null
    source "$run/settings.env"
  fi
  if [ ! -d "$run" ] && ! running_in "$home"; then return 0; fi
  log "stopping node $node"
  drain
  stop kubelet
  stop kube-proxy
  if [ "$(cat "$host_owner" 2>/dev/null)" = "$home" ]; then
    # kube-proxy's own cleanup of its iptables chains, then the kubelet's.
    "$bin/kube-proxy" --cleanup >>"$run/logs/kube-proxy.log" 2>&1 || true
    remove_kube_chains
  fi
  # containerd (re)started if need be, to stop the pods' containers it knows.
  if [ -f "$run/containerd/config.toml" ] && ! alive "$home" containerd; then
    start containerd containerd --config "$run/containerd/config.toml"
    wait_for 30 "containerd" containerd_ready || true
  fi
  if alive "$home" containerd; then remove_containers; fi
  stop containerd
  # What is still mounted under the node's directory (network namespaces, volumes), deepest first.
  local m
  findmnt -rn -o TARGET | grep -F "$run/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ -n "${bridge:-}" ] && ip link show "$bridge" >/dev/null 2>&1; then ip link delete "$bridge"; fi
  if [ -f "$kubeconfig" ]; then
    kc delete node "$node" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  restore_kernel_settings
  # The kubelet's device-plugin socket has a fixed path; left alone if another kubelet runs.
  if ! pgrep -x kubelet >/dev/null; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  fi
  if [ "$(cat "$host_owner" 2>/dev/null)" = "$home" ]; then rm -f "$host_owner"; fi
  rm -rf "$run"
  log "node $node is down"
}

status() {
  if healthy; then
    echo "[realnode] node $node Ready: containerd, kubelet, kube-proxy running (pods $subnet)"
    return
  fi
  # Whether it could run here: a machine that cannot run it is not an unhealthy cluster.
  local rc=0
  (prerequisites && host_free) 2>/dev/null || rc=$?
  if [ "$rc" = 3 ]; then
    echo "[realnode] cannot run here: $(cat "$unavailable")"
    return 3
  fi
  if [ "$rc" = 0 ] && [ -f "$failed" ]; then
    echo "[realnode] the last start failed: $(cat "$unavailable"); \`cluster.sh up\` tries again"
    return 3
  fi
  echo "[realnode] node $node not running or not Ready"
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  import)
    [ -f "${2:-}" ] || die "usage: $0 import ARCHIVE"
    ctr images import "$2"
    ;;
  *) echo "usage: $0 up|down|status|import ARCHIVE" >&2; exit 2 ;;
esac
