#!/usr/bin/env bash
# What building and running aliasop's images needs on a Debian bookworm machine without a
# container registry, made idempotently:
#   1. podman, runc and mmdebstrap from Debian's packages (installed when missing; needs root);
#   2. the base image the Dockerfile names, debian:bookworm-slim, made here by mmdebstrap from
#      Debian's packages the way Debian's official image is made (variant minbase, slimmed),
#      cached as a tarball in ${ALIASOP_CACHE:-~/.cache/aliasop}/images so that an empty
#      podman store is refilled in seconds.
# Usage: images/setup.sh [--refresh]   (--refresh makes the base image anew from Debian)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=podman.env
source "$here/podman.env"

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}/images
base_tar="$cache/$BASE_TARBALL"
refresh=false
case "${1:-}" in
  --refresh) refresh=true ;;
  "") ;;
  *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

step=0
steps=3
progress() {
  step=$((step + 1))
  echo "[images-setup $step/$steps] $*  ($(date +%H:%M:%S))"
}
fail() {
  echo "[images-setup] error: $*" >&2
  exit 1
}

install_packages() {
  progress "podman, runc, mmdebstrap from Debian's packages"
  local missing=() p
  for p in podman runc mmdebstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "  installed: $(podman --version), $(runc --version | head -1)"
    return
  fi
  [ "$(id -u)" = 0 ] || fail "missing ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}"
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get: this script expects Debian"
  echo "  installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # runc named explicitly: podman's first choice, crun, refuses this kind of machine's
  # hybrid cgroup hierarchy. No recommends: rootless helpers and fuse are not needed as root.
  apt-get install -y -qq --no-install-recommends podman runc mmdebstrap >/dev/null
  echo "  installed: $(podman --version), $(runc --version | head -1)"
}

# Debian's official debian:bookworm-slim is built by debuerreotype: variant minbase
# (Essential, Priority required, apt), with documentation, man pages and translations
# excluded from dpkg, and apt configured for containers. This makes the same from the same
# suites, so a build here starts from what `docker pull debian:bookworm-slim` gives.
make_base_tarball() {
  [ "$(id -u)" = 0 ] || fail "making the base image with mmdebstrap needs root"
  mkdir -p "$cache"
  local tmp="$base_tar.partial"
  rm -f "$tmp"
  local log="$cache/mmdebstrap.log"
  echo "  mmdebstrap --variant=minbase: bookworm with its updates and security updates (log: $log)"
  # merged-usr hook: /usr merged by symlinks plus the usr-is-merged package, as Debian's
  # image has it (not the usrmerge package, which would pull in perl).
  mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='APT::AutoRemove::SuggestsImportant "false"' \
    --customize-hook='rm -f "$1/etc/apt/sources.list"' \
    --customize-hook="printf '%s\n' \"$DEBIAN_SOURCES\" > \"\$1/etc/apt/sources.list.d/debian.sources\"" \
    --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1/etc/apt/apt.conf.d/docker-clean"' \
    --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin "$1/var/log/"*.log' \
    bookworm "$tmp" "${DEBIAN_MIRRORS[@]}" >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; fail "mmdebstrap failed (is deb.debian.org reachable?); log: $log"; }
  mv "$tmp" "$base_tar"
  echo "  cached $base_tar ($(du -h "$base_tar" | cut -f1))"
}

base_image() {
  progress "base image $BASE_IMAGE"
  if $refresh; then
    rm -f "$base_tar"
    podman "${PODMAN_GLOBAL_OPTS[@]}" rmi --force "$BASE_IMAGE" >/dev/null 2>&1 || true
  fi
  if podman "${PODMAN_GLOBAL_OPTS[@]}" image exists "$BASE_IMAGE"; then
    echo "  present in podman's store"
    return
  fi
  if [ -f "$base_tar" ]; then
    echo "  importing the cached $base_tar"
  else
    make_base_tarball
  fi
  podman "${PODMAN_GLOBAL_OPTS[@]}" import --quiet --change 'CMD ["bash"]' \
    --message "debian bookworm minbase, slimmed, by mmdebstrap (aliasop images/setup.sh)" \
    "$base_tar" "$BASE_IMAGE" >/dev/null
  echo "  imported as $BASE_IMAGE"
}

check_run() {
  progress "podman runs a container (runc, cgroupfs)"
  podman "${PODMAN_GLOBAL_OPTS[@]}" run --rm --network none "${PODMAN_RUN_OPTS[@]}" \
    "$BASE_IMAGE" true \
    || fail "podman could not run a container from $BASE_IMAGE (see the messages above)"
  echo "  ok"
}

install_packages
base_image
check_run
