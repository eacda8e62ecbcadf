#!/usr/bin/env bash
# Builds aliasop's images from the one Dockerfile with podman: aliasop:<version> (target
# operator) and aliasop-serving:<version> (target serving), <version> from pyproject.toml.
# Run images/setup.sh first (`make images` does): it provides podman and the base image.
# Build caches (podman's layers, pip's downloads in a cache mount) make a rebuild quick.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=podman.env
source "$here/podman.env"
cd "$repo"

fail() {
  echo "[images] error: $*" >&2
  exit 1
}
command -v podman >/dev/null || fail "no podman: run images/setup.sh"
podman() { command podman "${PODMAN_GLOBAL_OPTS[@]}" "$@"; }
podman image exists "$BASE_IMAGE" || fail "no $BASE_IMAGE in podman's store: run images/setup.sh"

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=""
if revision=$(git rev-parse HEAD 2>/dev/null); then
  git diff --quiet HEAD -- Dockerfile .dockerignore pyproject.toml README.md operator requirements \
    2>/dev/null || revision="$revision-dirty"
fi
source_url=$(git remote get-url origin 2>/dev/null || true)

# pip in the build reaches PyPI with the CA bundle this machine's pip is configured with (a
# TLS-inspecting proxy's CA, say): mounted read-only over the same path for the steps that run
# pip, never copied into an image. Debian's pip in the image reads that path by default.
ca_bundle=${PIP_CERT:-}
if [ -z "$ca_bundle" ]; then
  for pip in pip3 "$repo/.venv/bin/pip"; do
    if command -v "$pip" >/dev/null 2>&1; then
      ca_bundle=$("$pip" config get global.cert 2>/dev/null || true)
      break
    fi
  done
fi
mounts=()
if [ -n "$ca_bundle" ]; then
  [ -f "$ca_bundle" ] || fail "pip's CA bundle $ca_bundle does not exist"
  mounts+=(-v "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro")
fi

# Everything the images are made of. When the images built last from the same inputs are
# still there, podman is not asked (its layer cache would rebuild nothing, in 20-30 s of
# checksums). Kept beside the base image's tarball.
stamp=${ALIASOP_CACHE:-$HOME/.cache/aliasop}/images/built
inputs=$(
  {
    find Dockerfile .dockerignore pyproject.toml README.md operator requirements -type f \
      ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    podman image inspect --format '{{.Id}}' "$BASE_IMAGE"
    printf '%s\n' "$version" "$revision" "$source_url"
  } | sha256sum | cut -c1-32
)
image_ids() {
  podman image inspect --format '{{.Id}}' "aliasop:$version" "aliasop-serving:$version" \
    2>/dev/null | tr '\n' ' '
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs $(image_ids)" ]; then
  echo "[images] aliasop:$version and aliasop-serving:$version are up to date"
  exit 0
fi

build=(build --network host "${PODMAN_RUN_OPTS[@]}" --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")
step() {
  echo "[images] $*  ($(date +%H:%M:%S))"
}

# The apt stage first, without the CA mount: installing ca-certificates writes that file.
start=$SECONDS
step "Debian's python3 on $BASE_IMAGE (stage python)"
podman "${build[@]}" --target python --quiet . >/dev/null
for target in operator serving; do
  image=aliasop:$version
  [ "$target" = operator ] || image=aliasop-$target:$version
  step "$image (target $target)"
  podman "${build[@]}" "${mounts[@]}" --target "$target" --tag "$image" .
done
# Each build's images replace the last ones under the same tags: drop the untagged old ones
# (only aliasop's: the filter is their title label).
for title in aliasop aliasop-serving; do
  podman image prune --force --filter "label=org.opencontainers.image.title=$title" >/dev/null
done
mkdir -p "$(dirname "$stamp")"
echo "$inputs $(image_ids)" >"$stamp"
step "built in $((SECONDS - start)) s"
for image in "aliasop:$version" "aliasop-serving:$version"; do
  size=$(podman image inspect --format '{{.Size}}' "$image")
  echo "  $image: $((size / 1000000)) MB"
done
