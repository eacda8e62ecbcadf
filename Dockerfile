# aliasop images. There is no Docker engine on the development machines: the commands below
# are the ones `make install` runs and the tests exercise (wheel install, `aliasop run`,
# `mlflow models serve` as rendered by the operator).
#   docker build --target operator -t aliasop:0.1.0 .
#   docker build --target serving  -t aliasop-serving:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m build --wheel --outdir /dist

FROM ${PYTHON_IMAGE} AS operator-env
COPY --from=wheel /dist /dist
RUN python -m venv /opt/aliasop \
    && /opt/aliasop/bin/pip install --no-cache-dir /dist/aliasop-0.1.0-py3-none-any.whl

FROM ${PYTHON_IMAGE} AS serving-env
COPY --from=wheel /dist /dist
RUN python -m venv /opt/aliasop \
    && /opt/aliasop/bin/pip install --no-cache-dir "/dist/aliasop-0.1.0-py3-none-any.whl[serving]"

# The operator: `aliasop run`. Non-root, nothing but the virtualenv on top of the base.
# MALLOC_ARENA_MAX=2: DNS lookups and the memory trim run in asyncio's worker threads, and
# glibc's default of one malloc arena per thread (up to 8 per core) costs memory for nothing.
FROM ${PYTHON_IMAGE} AS operator
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
COPY --from=serving-env /opt/aliasop /opt/aliasop
ENV PATH=/opt/aliasop/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlflow"]
CMD ["models", "serve", "--help"]
