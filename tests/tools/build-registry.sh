#!/usr/bin/env bash
# Builds the OCI registry the release tests push to: CNCF distribution's `registry`
# (github.com/distribution/distribution/v3, Apache-2.0), the reference implementation of the
# OCI distribution spec, run on loopback with its filesystem storage
# (aliasop_dev.local.oci_registry). Built from its Go module through the module proxy into
# ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin as its Makefile builds it (its version ldflags),
# and rebuilt only when DISTRIBUTION_VERSION or the Go version changed (a stamp keeps their hash).
set -euo pipefail

DISTRIBUTION_VERSION=v3.1.2

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}

started=$(date +%s)
echo "[registry-build] distribution $DISTRIBUTION_VERSION  ($(date +%H:%M:%S))"
sum=$(printf '%s\n' "$(go env GOVERSION)" "$DISTRIBUTION_VERSION" | sha256sum | cut -d' ' -f1)
stamp="$bin/.registry.sum"
if [ -x "$bin/registry" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  pkg=github.com/distribution/distribution/v3
  echo "  compiling $pkg/cmd/registry@$DISTRIBUTION_VERSION"
  # `go install module@version` builds with distribution's own go.mod and go.sum.
  tmp="$bin/.registry-build"
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X $pkg/version.version=$DISTRIBUTION_VERSION -X $pkg/version.mainpkg=$pkg" \
    "$pkg/cmd/registry@$DISTRIBUTION_VERSION"
  mv "$tmp/registry" "$bin/registry"
  rmdir "$tmp"
  echo "$sum" >"$stamp"
fi
"$bin/registry" --version
echo "[registry-build] done in $(($(date +%s) - started))s: $bin/registry"
