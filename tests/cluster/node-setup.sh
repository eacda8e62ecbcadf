#!/usr/bin/env bash
# Installs, from Debian's packages, what the test cluster's real node (aliasop_dev.cluster.realnode)
# needs: containerd and runc (the container runtime), containernetworking-plugins (the pods' bridge
# network), iptables and conntrack (kube-proxy), iproute2 and procps (the node's bridge, ports and
# kernel settings), gcc with libc6-dev (the pause image is built from pause.c). Idempotent:
# installed packages are left alone. kubelet and kube-proxy are built by build.sh; the smoke-test
# image's busybox comes from Debian's busybox-static .deb, which the real node downloads (installing
# it would replace a machine's busybox package).
#
# Where this cannot install (not root, no apt-get, apt fails) it says why and exits 0, so that
# `make test` still runs everything else and the real-node tests skip with the reason; with
# ALIASOP_REQUIRE_REAL_NODE=1 (CI) it exits 1 instead.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 procps gcc libc6-dev)

log() { echo "[node-setup] $*  ($(date +%H:%M:%S))"; }
give_up() {
  echo "[node-setup] cannot set up the real node: $*" >&2
  if [ "${ALIASOP_REQUIRE_REAL_NODE:-}" = 1 ]; then exit 1; fi
  echo "[node-setup] the cluster will run without it; its tests skip" >&2
  exit 0
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

[ "$(uname -s)" = Linux ] || give_up "the real node needs Linux (this is $(uname -s))"
command -v dpkg-query >/dev/null || give_up "no dpkg: this script installs Debian's packages (${packages[*]})"

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "installed: containerd $(containerd --version | awk '{print $3}'), $(runc --version | head -1)"
  exit 0
fi
[ "$(id -u)" = 0 ] || give_up "missing ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}"
command -v apt-get >/dev/null || give_up "missing ${missing[*]} and no apt-get"

started=$SECONDS
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# No recommends; and no service is started: the real node runs containerd with its own
# configuration, socket and directories (on a machine with systemd the package's own
# containerd.service may also start; the two do not share anything).
apt-get update -qq || give_up "apt-get update failed"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
  give_up "apt-get install ${missing[*]} failed"
log "installed in $((SECONDS - started))s: containerd $(containerd --version | awk '{print $3}')"
