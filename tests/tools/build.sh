#!/usr/bin/env bash
# Builds the Go tools the integration tests use to read aliasop's status with the GitOps tools'
# own code: kstatus (sigs.k8s.io/cli-utils, as Flux waits on resources) and lua-health (Argo CD's
# Lua VM running a health.lua). Binaries go to ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin.
# A binary is rebuilt only when its module's go.mod, go.sum or main.go, or the Go version,
# changed since it was built (a stamp beside it keeps their hash).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads. go.sum is committed, so the downloads are still checked against it.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
export GOPATH=${GOPATH:-$HOME/go}

tools=(kstatus lua-health)
step=0
steps=$((${#tools[@]} + 1))
progress() {
  step=$((step + 1))
  echo "[tools-build $step/$steps] $*  ($(date +%H:%M:%S))"
}

started=$(date +%s)
go_version=$(go env GOVERSION)
for tool in "${tools[@]}"; do
  progress "$tool"
  src="$here/$tool"
  sum=$( { echo "$go_version"; cat "$src/go.mod" "$src/go.sum" "$src/main.go"; } | sha256sum | cut -d' ' -f1)
  stamp="$bin/.$tool.sum"
  if [ -x "$bin/$tool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    echo "  cached in $bin"
    continue
  fi
  echo "  compiling $src"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/$tool.tmp" .)
  mv "$bin/$tool.tmp" "$bin/$tool"
  echo "$sum" >"$stamp"
done
progress "done in $(($(date +%s) - started))s: $bin"
