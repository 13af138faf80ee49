# syntax=docker/dockerfile:1
#
# Production image for flex-handover. One image runs both roles; the
# subcommand picks which:
#   docker run IMAGE                      -> API on 0.0.0.0:8080 (default CMD)
#   docker run IMAGE worker               -> arq worker
# Configuration comes from environment variables (see .env.example).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# Build stage: install the project and its dependencies into a virtualenv, so
# the runtime stage gets only /opt/venv (no pip cache, no build leftovers).
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the build needs: metadata first, then the top-level packages
# declared in [tool.setuptools] packages (standins too: `flex-handover dev` and
# `flex-handover simulator` are commands of the image). Tests, bench and docs stay out.
COPY pyproject.toml README.md ./
COPY commands/ commands/
COPY api/ api/
COPY worker/ worker/
COPY shared/ shared/
COPY standins/ standins/
# A regular (non-editable) install: the code lands in site-packages and /src
# is not needed at runtime.
RUN pip install --no-cache-dir .

# ---------------------------------------------------------------------------
# Runtime stage.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# Fixed numeric uid/gid so orchestrators can verify runAsNonRoot and volume
# ownership is predictable.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8080

# Liveness of the API process (/healthz does not touch Redis, so a Redis blip
# does not mark the container unhealthy). slim has no curl: use the stdlib.
# urlopen raises on connection errors and non-2xx, which exits non-zero.
# The port is fixed at 8080 to match the default CMD; the worker role serves
# no HTTP, so docker-compose.yml gives the worker service its own check
# (`flex-handover worker --check`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# Exec form: flex-handover is PID 1 and receives SIGTERM from `docker stop`
# directly (aiohttp and arq both install SIGTERM handlers for a clean shutdown).
ENTRYPOINT ["flex-handover"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
