# syntax=docker/dockerfile:1
#
# realtime-relay container image.
#
#   docker build -t realtime-relay .
#   docker run --rm -p 127.0.0.1:8080:8080 realtime-relay --demo
#
# Two stages: the builder resolves and installs the locked dependencies with uv into /app/.venv; the runtime
# stage copies only that virtual environment onto a clean Python base, so neither uv, its cache nor the source
# tree ship in the image.
#
# Both base images are pinned by digest (a tag can be moved to other content; a digest cannot). Each is a build
# argument so that a mirror or a locally made equivalent can stand in for it without editing this file.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.0@sha256:cdc6093146eb3ff6a40107b38f008b789e050e77ad87865e381d9917da55a168

FROM ${UV_IMAGE} AS uv

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
# --locked, not --frozen: a uv.lock that no longer matches pyproject.toml fails the build instead of shipping.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=/src/uv.lock \
    --mount=type=bind,source=pyproject.toml,target=/src/pyproject.toml \
    uv sync --locked --no-dev --no-install-project

# Then the project itself, installed as a wheel (non-editable) so the venv does not reference /src; hatchling
# needs README.md for the metadata and web/ for the force-included static client. The build backend and its
# dependencies are pinned in pyproject.toml (build-system, tool.uv.build-constraint-dependencies).
COPY pyproject.toml uv.lock README.md ./
COPY relay ./relay
COPY web ./web
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="realtime-relay" \
      org.opencontainers.image.description="Voice relay for the OpenAI Realtime API: the API key stays on the server." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

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

# Liveness of the process, not of the upstream: /healthz answers without touching OpenAI. relay.healthcheck asks
# the running relay's own settings (its flags and environment) where it listens, so `--port` is honoured too.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "relay.healthcheck"]

ENTRYPOINT ["realtime-relay"]
CMD []
