#!/usr/bin/env bash
# Publishes a release to an OCI registry: both images that images/build.sh made, and the Helm
# chart as an OCI artefact whose values name that registry, so that
#   helm install aliasop oci://REGISTRY/charts/aliasop --version <version>
# runs images the cluster pulls from REGISTRY. `make release REGISTRY=host[:port][/path]`
# builds the images first, then runs this. Log in beforehand where the registry wants it
# (`podman login REGISTRY`, `helm registry login REGISTRY`). PLAIN_HTTP=1 talks plain HTTP
# (a registry on loopback, as the tests run one). HELM: the helm to use (3.8 or later);
# default: helm on PATH, else the one tests/tools/build.sh builds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=podman.env
source "$here/podman.env"
cd "$repo"

fail() {
  echo "[release] error: $*" >&2
  exit 1
}
registry=${1:-}
registry=${registry%/}
[ -n "$registry" ] || fail "usage: images/release.sh REGISTRY (host[:port][/path])"
case "$registry" in
  *://*) fail "REGISTRY is host[:port][/path], without a scheme: $registry" ;;
esac
command -v podman >/dev/null || fail "no podman: run images/setup.sh"
podman() { command podman "${PODMAN_GLOBAL_OPTS[@]}" "$@"; }
helm=${HELM:-$(command -v helm || echo "${ALIASOP_CACHE:-$HOME/.cache/aliasop}/tools/bin/helm")}
[ -x "$helm" ] || fail "no helm ($helm): install helm 3.8+ or run tests/tools/build.sh"

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
tls=()
helm_http=()
if [ "${PLAIN_HTTP:-0}" = 1 ]; then
  tls=(--tls-verify=false)
  helm_http=(--plain-http)
fi
step() {
  echo "[release] $*  ($(date +%H:%M:%S))"
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for image in aliasop aliasop-serving; do
  podman image exists "$image:$version" || fail "no $image:$version: run images/build.sh"
  step "push $image:$version to $registry/$image:$version"
  podman push --quiet "${tls[@]}" --digestfile "$scratch/$image.digest" \
    "$image:$version" "docker://$registry/$image:$version"
  echo "  $registry/$image@$(cat "$scratch/$image.digest")"
done

# The chart as released: the same chart, its two `registry: ""` values set to REGISTRY.
step "push chart aliasop $version to oci://$registry/charts"
cp -r charts/aliasop "$scratch/aliasop"
values="$scratch/aliasop/values.yaml"
[ "$(grep -c '^  registry: ""$' "$values")" = 2 ] ||
  fail "charts/aliasop/values.yaml: expected image.registry and servingImage.registry empty"
sed -i "s|^  registry: \"\"\$|  registry: \"$registry\"|" "$values"
"$helm" package "$scratch/aliasop" --destination "$scratch" >/dev/null
"$helm" push "$scratch/aliasop-$version.tgz" "oci://$registry/charts" "${helm_http[@]}"
step "released $version: helm install aliasop oci://$registry/charts/aliasop --version $version"
