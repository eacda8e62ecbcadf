#!/usr/bin/env bash
# Builds the Prometheus server the analysis tests query
# (tests/integration/test_analysis_providers.py), and promtool, which checks and unit-tests the
# chart's alert rules (tests/integration/test_monitoring.py):
# github.com/prometheus/prometheus/cmd/{prometheus,promtool} at PROMETHEUS_VERSION, from its Go
# module through the module proxy, into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin. Each is
# rebuilt only when PROMETHEUS_VERSION or the Go version changed (a stamp beside each keeps
# their hash); promtool's build reuses the Go build cache the server's filled.
#
# Built as Prometheus' own .promu.yml builds it (tag netgo, the version ldflags), with two
# differences:
# - no `builtinassets` tag: the web UI's assets are made by an npm build that is not in the Go
#   module, so the binary serves its HTTP API (all the tests use) and answers 404 for the UI;
# - the `remove_all_sd` tag, Prometheus' documented way to leave out the optional service
#   discoveries (cloud SDKs, Kubernetes' client): static, file and HTTP discovery remain, and
#   the tests scrape a static target. It makes the cold build several times cheaper.
set -euo pipefail

PROMETHEUS_VERSION=v0.316.0 # the Go module's version of Prometheus 3.16.0

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
export GOPATH=${GOPATH:-$HOME/go}

started=$(date +%s)
echo "[prometheus-build] prometheus $PROMETHEUS_VERSION  ($(date +%H:%M:%S))"
tags=netgo,remove_all_sd
sum=$(printf '%s\n' "$(go env GOVERSION)" "$PROMETHEUS_VERSION" "$tags" | sha256sum | cut -d' ' -f1)
stamp="$bin/.prometheus.sum"
# v0.316.0 -> 3.16.0, the version Prometheus reports (`prometheus --version`, buildinfo).
minor=$(echo "$PROMETHEUS_VERSION" | sed -E 's/^v0\.([0-9]+)\.([0-9]+)$/\1/')
patch=$(echo "$PROMETHEUS_VERSION" | sed -E 's/^v0\.([0-9]+)\.([0-9]+)$/\2/')
version="$((minor / 100)).$((minor % 100)).$patch"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
ldflags+=" -X github.com/prometheus/common/version.BuildUser=aliasop"
if [ -x "$bin/prometheus" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  cached in $bin"
else
  echo "  compiling github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
    "(cold: about 7 minutes on 2 busy cores)"
  # `go install module@version` builds with Prometheus' own go.mod and go.sum; -mod does not
  # apply to it, so GOFLAGS keeps -buildvcs=false only.
  tmp="$bin/.prometheus-build"
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -tags "$tags" -ldflags "$ldflags" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
  mv "$tmp/prometheus" "$bin/prometheus"
  rmdir "$tmp"
  echo "$sum" >"$stamp"
fi
"$bin/prometheus" --version | head -1

promtool_stamp="$bin/.promtool.sum"
if [ -x "$bin/promtool" ] && [ "$(cat "$promtool_stamp" 2>/dev/null)" = "$sum" ]; then
  echo "  promtool cached in $bin"
else
  echo "  compiling github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  tmp="$bin/.promtool-build"
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -tags "$tags" -ldflags "$ldflags" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  mv "$tmp/promtool" "$bin/promtool"
  rmdir "$tmp"
  echo "$sum" >"$promtool_stamp"
fi
"$bin/promtool" --version | head -1
echo "[prometheus-build] done in $(($(date +%s) - started))s: $bin/prometheus, $bin/promtool"
