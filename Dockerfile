# aliasop images. There is no Docker engine on the development machines: the commands below
# are the ones `make install` runs and the tests exercise (wheel install, `aliasop run`,
# `mlflow models serve` as rendered by the operator). The version is the one in pyproject.toml;
# the build fails when VERSION differs from the wheel's, so that labels and tags cannot lie.
#   VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
#   docker build --target operator --build-arg VERSION="$VERSION" -t "aliasop:$VERSION" .
#   docker build --target serving  --build-arg VERSION="$VERSION" -t "aliasop-serving:$VERSION" .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m build --wheel --outdir /dist
ARG VERSION
RUN test -f "/dist/aliasop-${VERSION:?pass --build-arg VERSION, see the top of this file}-py3-none-any.whl"

FROM ${PYTHON_IMAGE} AS operator-env
COPY --from=wheel /dist /dist
RUN python -m venv /opt/aliasop \
    && /opt/aliasop/bin/pip install --no-cache-dir /dist/aliasop-*.whl

FROM ${PYTHON_IMAGE} AS serving-env
COPY --from=wheel /dist /dist
# The one wheel in /dist, with its extra: a glob cannot carry `[serving]` itself.
RUN set -- /dist/aliasop-*.whl \
    && python -m venv /opt/aliasop \
    && /opt/aliasop/bin/pip install --no-cache-dir "$1[serving]"

# The operator: `aliasop run`. Non-root, nothing but the virtualenv on top of the base.
# MALLOC_ARENA_MAX=2: DNS lookups and the memory trim run in asyncio's worker threads, and
# glibc's default of one malloc arena per thread (up to 8 per core) costs memory for nothing.
FROM ${PYTHON_IMAGE} AS operator
ARG VERSION
LABEL org.opencontainers.image.title="aliasop" \
      org.opencontainers.image.description="Kubernetes operator that keeps model-serving Deployments in step with MLflow Model Registry aliases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-env /opt/aliasop /opt/aliasop
ENV PATH=/opt/aliasop/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["aliasop"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]

# Serving pods: the operator renders `mlflow models serve -m models:/<name>/<version> ...`.
# HOME=/tmp: with a read-only root filesystem, /tmp is the emptyDir the pod mounts.
FROM ${PYTHON_IMAGE} AS serving
ARG VERSION
LABEL org.opencontainers.image.title="aliasop-serving" \
      org.opencontainers.image.description="MLflow model serving for aliasop's ModelDeployments" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=serving-env /opt/aliasop /opt/aliasop
ENV PATH=/opt/aliasop/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlflow"]
CMD ["models", "serve", "--help"]
