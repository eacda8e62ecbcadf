# aliasop's two images, from Debian bookworm's Python 3.11 and the lock files in requirements/
# (every package pinned with its hashes; `make lock` regenerates them from pyproject.toml).
# The version is written once, in pyproject.toml; the build fails when VERSION differs from
# the wheel's, so that labels and tags cannot lie. `make images` (images/build.sh) runs:
#   VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
#   docker build --target operator --build-arg VERSION="$VERSION" -t "aliasop:$VERSION" .
#   docker build --target serving  --build-arg VERSION="$VERSION" -t "aliasop-serving:$VERSION" .
# (add --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE=<repository URL> to
# label the images with their commit and repository).
ARG BASE_IMAGE=debian:bookworm-slim

# Debian's Python, nothing else: python3-venv for the virtualenvs, ca-certificates for TLS to
# MLflow and the API server. Versions come with the base image's Debian release (bookworm gets
# security updates only), so they are not pinned one by one.
FROM ${BASE_IMAGE} AS python
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Every `pip install` takes the lock file's hashes and wheels only. The wheels are kept in a
# build cache (pip's own HTTP cache keeps nothing from servers that send no Cache-Control), so
# a rebuild after a lock change downloads only what changed.

# aliasop's wheel, built without build isolation from the locked build requirements.
FROM python AS wheel
COPY requirements/build.txt /tmp/requirements.txt
RUN --mount=type=cache,id=aliasop-wheels,target=/var/cache/wheels \
    python3 -m venv /opt/build \
    && /opt/build/bin/pip download --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --only-binary=:all: --dest /var/cache/wheels -r /tmp/requirements.txt \
    && /opt/build/bin/pip install --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --no-index --find-links /var/cache/wheels -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/build/bin/pip wheel --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir /dist .
ARG VERSION
RUN test -f "/dist/aliasop-${VERSION:?pass --build-arg VERSION, see the top of this file}-py3-none-any.whl"

# The operator's virtualenv: its locked dependencies, then the wheel alone.
FROM python AS operator-env
COPY requirements/operator.txt /tmp/requirements.txt
RUN --mount=type=cache,id=aliasop-wheels,target=/var/cache/wheels \
    python3 -m venv /opt/aliasop \
    && /opt/aliasop/bin/pip download --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --only-binary=:all: --dest /var/cache/wheels -r /tmp/requirements.txt \
    && /opt/aliasop/bin/pip install --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --no-index --find-links /var/cache/wheels -r /tmp/requirements.txt
COPY --from=wheel /dist /dist
RUN /opt/aliasop/bin/pip install --disable-pip-version-check --no-deps --no-index /dist/aliasop-*.whl \
    && /opt/aliasop/bin/pip check

# The serving virtualenv: the `serving` extra's locked packages (MLflow, scikit-learn,
# uvicorn) and none of the operator's; serving pods run `mlflow artifacts download`, then
# MLflow's scoring app with uvicorn.
FROM python AS serving-env
COPY requirements/serving.txt /tmp/requirements.txt
RUN --mount=type=cache,id=aliasop-wheels,target=/var/cache/wheels \
    python3 -m venv /opt/serving \
    && /opt/serving/bin/pip download --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --only-binary=:all: --dest /var/cache/wheels -r /tmp/requirements.txt \
    && /opt/serving/bin/pip install --disable-pip-version-check --no-cache-dir --require-hashes \
       --no-deps --no-index --find-links /var/cache/wheels -r /tmp/requirements.txt \
    && /opt/serving/bin/pip check

# The operator: `aliasop run`. Non-root, nothing but the virtualenv on top of Debian's Python.
# MALLOC_ARENA_MAX=2: DNS lookups and the memory trim run in asyncio's worker threads, and
# glibc's default of one malloc arena per thread (up to 8 per core) costs memory for nothing.
FROM python AS operator
ARG VERSION
# The commit and repository the image was built from, when the build passes them.
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="aliasop" \
      org.opencontainers.image.description="Kubernetes operator that keeps model-serving Deployments in step with MLflow Model Registry aliases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-env /opt/aliasop /opt/aliasop
ENV PATH=/opt/aliasop/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["aliasop"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]

# Serving pods: the operator renders the download (`mlflow artifacts download --artifact-uri
# models:/<name>/<version> ...`) and the server (`uvicorn ... mlflow.pyfunc.scoring_server.app:app`).
# HOME=/tmp: with a read-only root filesystem, /tmp is the emptyDir the pod mounts.
FROM python AS serving
ARG VERSION
# The commit and repository the image was built from, when the build passes them.
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="aliasop-serving" \
      org.opencontainers.image.description="MLflow model serving for aliasop's ModelDeployments" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=serving-env /opt/serving /opt/serving
ENV PATH=/opt/serving/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlflow"]
CMD ["models", "serve", "--help"]
