# syntax=docker/dockerfile:1
#
# realtime-relay container image.
#
#   docker build -t realtime-relay .
#   docker run --rm -p 8080:8080 realtime-relay --demo
#
# Two stages: the builder resolves and installs the locked dependencies with uv into /app/.venv; the runtime
# stage copies only that virtual environment onto a clean python:3.11-slim, so neither uv, its cache nor the
# source tree ship in the image.

ARG PYTHON_IMAGE=python:3.11-slim
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

COPY --from=uv /uv /usr/local/bin/uv

# Bytecode is compiled once here because the runtime filesystem is meant to be read-only. Copy (not hardlink)
# mode because the cache mount is a different filesystem. Never download a Python: the venv must point at the
# base image's interpreter, which is the same path in the runtime stage.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first, from the lock file alone: this layer is reused until uv.lock or pyproject.toml change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a wheel (non-editable) so the venv does not reference /src; hatchling
# needs README.md for the metadata and web/ for the force-included static client.
COPY pyproject.toml uv.lock README.md ./
COPY relay ./relay
COPY web ./web
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric id lets Kubernetes verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin relay \
    && mkdir /data && chown 10001:10001 /data

# Saved conversations (SQLite) live here: mount a volume to keep them across containers.
VOLUME /data

# Owned by root and not writable by the relay user: the running process cannot modify its own code.
COPY --from=builder /app/.venv /app/.venv

# Inside a container the relay must listen on all interfaces to be reachable at all; the metrics listener too, so
# that Prometheus on the same private network can scrape it. Publishing the metrics port is up to the operator and
# the deployment files in deploy/ never do.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RELAY_DATA_DIR=/data \
    RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080 \
    RELAY_METRICS_HOST=0.0.0.0 \
    RELAY_METRICS_PORT=9464 \
    RELAY_LOG_FORMAT=json

WORKDIR /app
USER 10001:10001

EXPOSE 8080 9464

# The relay drains on SIGTERM (/readyz turns 503, open sessions get time to finish).
STOPSIGNAL SIGTERM

# Liveness of the process, not of the upstream: /healthz answers without touching OpenAI. urllib raises on any
# non-2xx status or connection error, which makes the exit status non-zero.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RELAY_PORT', '8080') + '/healthz', timeout=2)"]

ENTRYPOINT ["realtime-relay"]
CMD []
