# Eventflow service image: `eventflow consume` (Kafka -> Temporal) and `eventflow worker` (journeys).
# Multi-stage: dependencies are installed into a virtualenv in the build stage, and only that
# virtualenv plus the Avro schemas and journeys are copied into the runtime stage, which runs as an
# unprivileged user and works with a read-only root filesystem (writes go to /tmp).
# Note: this image is built in CI or on a workstation; the project's development machines have no
# Docker engine, so it is not built by the test suite (the Helm chart is tested with `helm template`).

# Pin by digest where you build (`docker buildx imagetools inspect python:3.11-slim-bookworm`), e.g.
# --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>; see docs/architecture.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eventflow
WORKDIR /src
# Dependencies first so code changes do not invalidate this layer: exactly the locked versions,
# each checked against its hash (the build backend is in the lock too, hence no build isolation).
COPY requirements.lock ./
RUN /opt/eventflow/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY store ./store
COPY eventflow ./eventflow
COPY devstack ./devstack
COPY events ./events
COPY journeys ./journeys
COPY consumer ./consumer
COPY workflows ./workflows
COPY activities ./activities
COPY store ./store
RUN /opt/eventflow/bin/pip install --no-deps --no-build-isolation . \
    && /opt/eventflow/bin/python -m compileall -q /opt/eventflow

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} eventflow \
    && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin eventflow
COPY --from=build /opt/eventflow /opt/eventflow
COPY avro /app/avro
COPY journeys/definitions /app/journeys/definitions
COPY journeys/templates /app/journeys/templates
ENV PATH=/opt/eventflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EVENTFLOW_AVRO_DIR=/app/avro \
    EVENTFLOW_JOURNEYS_DIR=/app/journeys \
    EVENTFLOW_CACHE_DIR=/tmp/eventflow \
    EVENTFLOW_LOG_FORMAT=json
WORKDIR /app
USER ${UID}:${UID}
# The ops ports' defaults: consumer 9464, worker 9466, webhooks 9467 (the chart sets one per pod).
EXPOSE 9464 9466 9467
ENTRYPOINT ["eventflow"]
CMD ["worker"]
