# syntax=docker/dockerfile:1
# Build stage: a wheel of regserve and its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto proto
COPY generated generated
COPY server server
COPY client client
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheels only, a non-root user, the service ports.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 regserve
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER regserve
WORKDIR /home/regserve
ENV REGSERVE_HOST=0.0.0.0 \
    REGSERVE_PORT=50051 \
    REGSERVE_GATEWAY_PORT=8080 \
    REGSERVE_METRICS_PORT=9090 \
    REGSERVE_MODEL_DIR=/home/regserve/models
# gRPC, the REST/JSON gateway, Prometheus metrics.
EXPOSE 50051 8080 9090
# The health check speaks grpc.health.v1 through the client library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["regserve", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["regserve", "serve"]
