# syntax=docker/dockerfile:1
# Device agent for NVIDIA Jetson (CUDA), on an L4T PyTorch base image: JetPack 6.x (L4T r36,
# Ubuntu 22.04, Python 3.10, CUDA 12). The base image's Python and CUDA build of torch are kept:
# pip never installs torch here. Everything else is the Jetson pin set (constraints/jetson.txt),
# a closed set installed with --no-deps, so no dependency can pull in another torch.
# JetPack 5.x (L4T r35) ships Python 3.8, which LoLa-DEFT does not support. See deploy/jetson/.
# Build ON the Jetson (aarch64) from the repository root:
#   docker build -f deploy/docker/jetson-agent.Dockerfile -t lola-deft/jetson-agent .
ARG L4T_PYTORCH_IMAGE=dustynv/l4t-pytorch:r36.2.0

FROM ${L4T_PYTORCH_IMAGE} AS build
# jetson-containers images point pip at their own mirror; the pins are all on PyPI.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_INDEX_URL=${PIP_INDEX_URL}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/jetson.txt ./constraints/jetson.txt
# Agent-side folders only: lola_deft/'s links to server/ and scheduler/ dangle here, so the wheel
# built from this context carries no coordinator or scheduler code.
COPY lola_deft ./lola_deft
COPY protos ./protos
COPY ml ./ml
COPY cli ./cli
COPY device_agent ./device_agent
# The venv sees the base image's site-packages (its torch); the check fails the build, naming
# the problem, if that torch is one transformers refuses (NVIDIA's pre-release 2.1.0a0).
RUN python3 -m venv --system-site-packages /opt/deft \
 && /opt/deft/bin/pip install --no-deps -r constraints/jetson.txt \
 && /opt/deft/bin/pip install --no-deps . \
 && /opt/deft/bin/python -c "import torch, transformers; \
assert transformers.utils.is_torch_available(), f'torch {torch.__version__} is older than 2.1.0: use a base image with torch 2.2 or newer'; \
import peft, grpc, lola_deft.device_agent.agent; print('torch', torch.__version__, 'transformers', transformers.__version__)"

FROM ${L4T_PYTORCH_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deft \
 && mkdir -p /var/cache/lola-deft && chown deft:deft /var/cache/lola-deft
COPY --from=build /opt/deft /opt/deft
ENV PATH=/opt/deft/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    LOLA_DEFT_CACHE=/var/cache/lola-deft
USER 10001
WORKDIR /home/deft
EXPOSE 9102
# Healthy while the coordinator keeps answering (read from the agent's metrics endpoint).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["deft", "health", "--agent", "127.0.0.1:9102", "--max-silence", "60"]
ENTRYPOINT ["deft", "agent", "--device", "cuda"]
CMD ["--coordinator", "edge-server:50052", "--metrics-port", "9102"]
