# Sourced by the tools' build scripts: `go_install_tool TAG BINARY VERSION PACKAGE LDFLAGS`
# builds PACKAGE@VERSION (`go install module@version`, with the module's own go.mod and go.sum)
# into ${ALIASOP_CACHE:-~/.cache/aliasop}/tools/bin/BINARY, and again only when VERSION or the Go
# version changed (a stamp beside it keeps their hash). TAG prefixes the progress lines.

cache=${ALIASOP_CACHE:-$HOME/.cache/aliasop}
bin="$cache/tools/bin"
mkdir -p "$bin"

# As tests/cluster/build.sh: only the module proxy is reachable, no checksum database, no
# toolchain downloads.
export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}

go_install_tool() {
  local tag=$1 binary=$2 version=$3 package=$4 ldflags=$5
  local started sum stamp tmp
  started=$(date +%s)
  echo "[$tag] $binary $version  ($(date +%H:%M:%S))"
  sum=$(printf '%s\n' "$(go env GOVERSION)" "$version" | sha256sum | cut -d' ' -f1)
  stamp="$bin/.$binary.sum"
  if [ -x "$bin/$binary" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    echo "  cached in $bin"
  else
    echo "  compiling $package@$version"
    tmp="$bin/.$binary-build"
    GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags "-s -w $ldflags" \
      "$package@$version"
    mv "$tmp/$binary" "$bin/$binary"
    rmdir "$tmp"
    echo "$sum" >"$stamp"
  fi
  echo "[$tag] done in $(($(date +%s) - started))s: $bin/$binary"
}
