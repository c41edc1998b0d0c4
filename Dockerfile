# syntax=docker/dockerfile:1
# Build stage: a wheel of regserve and its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto proto
COPY generated generated
COPY server server
COPY client client
# The s3 extra reads a registry on object storage (--model-dir s3://...), as the Kubernetes manifests use.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[s3]"

# Runtime stage: the wheels only, a non-root user, the service ports.
FROM python:3.11-slim
RUN groupadd --gid 10001 regserve && useradd --create-home --uid 10001 --gid 10001 regserve
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Numeric, so that Kubernetes can check runAsNonRoot without reading the image's /etc/passwd.
USER 10001:10001
WORKDIR /home/regserve
# No .pyc files written at run time, so the root filesystem can be mounted read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    REGSERVE_HOST=0.0.0.0 \
    REGSERVE_PORT=50051 \
    REGSERVE_GATEWAY_PORT=8080 \
    REGSERVE_METRICS_PORT=9090 \
    REGSERVE_MODEL_DIR=/home/regserve/models
# gRPC, the REST/JSON gateway, Prometheus metrics.
EXPOSE 50051 8080 9090
# The health check speaks grpc.health.v1 through the client library, to the port and with the TLS
# settings in REGSERVE_HOST, REGSERVE_PORT and REGSERVE_TLS_* (as `docker run -e` may change them); its
# timeout leaves the interpreter's start room beside the call's own 3 s deadline.
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["regserve", "health"]
ENTRYPOINT ["regserve", "serve"]
