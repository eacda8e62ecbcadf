#!/usr/bin/env bash
# Regenerates the images' lock files (requirements/*.txt, every file pinned with its hashes)
# from pyproject.toml, for Debian bookworm's Python (3.11.2, x86_64, glibc 2.36): `make lock`.
#   requirements/build.txt     [build-system] requires: what builds aliasop's wheel
#   requirements/operator.txt  [project] dependencies: the operator image
#   requirements/serving.txt   the `serving` extra and the artifact-store extras (serving-s3,
#                              -gcs, -azure): the serving image, which runs `mlflow models
#                              serve` and carries none of the operator's packages
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
out=requirements
mkdir -p "$out"

requirements() {  # the lists at dotted paths of pyproject.toml (joined by +), one a line
  python3 - "$1" <<'PY'
import sys, tomllib
pyproject = tomllib.load(open("pyproject.toml", "rb"))
for path in sys.argv[1].split("+"):
    node = pyproject
    for key in path.split("."):
        node = node[key]
    print("\n".join(node))
PY
}

extras=project.optional-dependencies
for lock in build:build-system.requires operator:project.dependencies \
  "serving:$extras.serving+$extras.serving-s3+$extras.serving-gcs+$extras.serving-azure"; do
  name=${lock%%:*}
  echo "[lock] $out/$name.txt from pyproject.toml's ${lock#*:}"
  requirements "${lock#*:}" | "$uv" pip compile - --quiet --generate-hashes \
    --python-version 3.11.2 --python-platform x86_64-manylinux_2_36 \
    --custom-compile-command "make lock" --output-file "$out/$name.txt"
done
