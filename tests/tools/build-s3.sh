#!/usr/bin/env bash
# Builds the S3 server the artifact-store tests run: versitygw (github.com/versity/versitygw,
# Apache-2.0), a real S3 gateway that keeps buckets and objects in a POSIX directory
# (`versitygw --access KEY --secret SECRET --port :PORT posix DIR`). It is built from its Go
# module through the module proxy into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin, and rebuilt
# only when VERSITYGW_VERSION or the Go version changed (a stamp beside it keeps their hash).
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}

started=$(date +%s)
echo "[s3-build] versitygw $VERSITYGW_VERSION  ($(date +%H:%M:%S))"
sum=$(printf '%s\n' "$(go env GOVERSION)" "$VERSITYGW_VERSION" | sha256sum | cut -d' ' -f1)
stamp="$bin/.versitygw.sum"
if [ -x "$bin/versitygw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  echo "  compiling github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION (cold: about 3 minutes on 2 cores)"
  # `go install module@version` builds with versitygw's own go.mod and go.sum; the version
  # string is versitygw's own ldflags (its Makefile), so `versitygw --version` tells it.
  tmp="$bin/.versitygw-build"
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  mv "$tmp/versitygw" "$bin/versitygw"
  rmdir "$tmp"
  echo "$sum" >"$stamp"
fi
echo "[s3-build] done in $(($(date +%s) - started))s: $bin/versitygw"
