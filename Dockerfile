# syntax=docker/dockerfile:1
# tracepipe image: the `tracepipe` entry point on a slim Python base, running as a non-root
# user with nothing writable but /tmp and the data directory (the Helm chart mounts both).
#
#   docker build -t ghcr.io/tracepipe/tracepipe:0.1.0 .
#   tracepipe token create --tenant acme --scopes ingest,read    # paste its lines under `tokens:` in tokens.yaml
#   docker run --rm -v $PWD/tokens.yaml:/etc/tracepipe/tokens.yaml:ro \
#     -p 4317:4317 -p 4318:4318 -p 8081:8081 -p 9464:9464 ghcr.io/tracepipe/tracepipe:0.1.0
#
# The default command is the embedded pipeline listening on all interfaces with bearer-token auth
# (config/container.yaml: tokens from /etc/tracepipe/tokens.yaml or $TRACEPIPE_TOKENS_FILE); the
# chart runs `tracepipe receiver|worker|run -c /etc/tracepipe/tracepipe.yaml` instead.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/tracepipe
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY processors ./processors
COPY sinks ./sinks
COPY config/container.yaml ./container.yaml
RUN /opt/tracepipe/bin/pip install . \
 && find /opt/tracepipe -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/tracepipe/bin/python -m compileall -q /opt/tracepipe/lib

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="tracepipe" \
      org.opencontainers.image.description="OpenTelemetry-Collector-style stream processor for LLM / GenAI telemetry" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tracepipe/tracepipe"
RUN groupadd --system --gid 10001 tracepipe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tracepipe --shell /usr/sbin/nologin tracepipe \
 && install -d -o 10001 -g 10001 /var/lib/tracepipe /etc/tracepipe
COPY --from=build /opt/tracepipe /opt/tracepipe
COPY --from=build /src/container.yaml /etc/tracepipe/container.yaml
ENV PATH=/opt/tracepipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /var/lib/tracepipe
VOLUME ["/var/lib/tracepipe"]
# OTLP/gRPC, OTLP/HTTP, query API + /healthz /readyz, Prometheus /metrics
EXPOSE 4317 4318 8081 9464
ENTRYPOINT ["tracepipe"]
CMD ["run", "-c", "/etc/tracepipe/container.yaml"]
