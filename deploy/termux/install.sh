#!/usr/bin/env bash
# Install the LoLa-DEFT device agent inside Termux on Android.
#
# torch, numpy, grpcio and psutil have no pip wheels for Android and take hours (or fail) to
# compile, so Termux's own packages provide them; pip installs the rest from the Termux pin set
# (constraints/termux.txt), a closed set installed with --no-deps so that pip never replaces a
# Termux build. What in that set is not pure Python (safetensors, regex, pyyaml, markupsafe; the
# tokenizers too when tur-repo lacks them) is compiled on the phone, with clang and rust.
# Every Termux version is then checked against the agent's ranges, and every import is tried.
#   bash deploy/termux/install.sh            (from a checkout of the repository, inside Termux)
# Environment: PKG (default pkg), PYTHON (default python), DEFT_SOURCE (the checkout),
# DEFT_TERMUX_FORCE=1 to run outside Termux (for testing).
set -euo pipefail

PKG=${PKG:-pkg}
PYTHON=${PYTHON:-python}
SOURCE=${DEFT_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PINS="$SOURCE/constraints/termux.txt"

log() { printf '==> %s\n' "$*"; }
fail() { printf 'deft-termux: error: %s\n' "$*" >&2; exit 1; }

if [[ "${PREFIX:-}" != *com.termux* && "${DEFT_TERMUX_FORCE:-0}" != 1 ]]; then
  fail "this script is for Termux on Android (PREFIX=${PREFIX:-unset}); elsewhere use: pip install '.[agent]'"
fi
[ -f "$SOURCE/pyproject.toml" ] || fail "no LoLa-DEFT checkout at $SOURCE (set DEFT_SOURCE)"
[ -f "$PINS" ] || fail "no Termux pin set at $PINS"

# 1. Termux packages: what pip cannot install on Android, and the tools to build the rest.
REQUIRED=(python python-pip python-numpy python-torch python-grpcio python-psutil
          clang rust binutils make)
log "updating Termux package lists"
"$PKG" update -y || log "pkg update failed; continuing with the current lists"
"$PKG" install -y tur-repo >/dev/null 2>&1 || log "tur-repo not available; using the main repository only"
for package in "${REQUIRED[@]}"; do
  log "pkg install $package"
  "$PKG" install -y "$package" || fail "pkg install $package failed: LoLa-DEFT needs Termux's $package (try 'pkg update' and a different mirror: termux-change-repo)"
done
# The tokenizers: Termux User Repository's build if there is one, else pip compiles them (Rust).
BUILD_TOKENIZERS=0
log "pkg install python-tokenizers"
if ! "$PKG" install -y python-tokenizers; then
  log "python-tokenizers is not in the repositories here: pip builds it (Rust, several minutes)"
  BUILD_TOKENIZERS=1
fi

# 2. The rest: the Termux pin set, no dependency resolution (nothing Termux provides is in it).
if [ "$BUILD_TOKENIZERS" = 1 ]; then
  TOKENIZERS=$(sed -n 's/^#provided \(tokenizers==[^ ]*\).*/\1/p' "$PINS")
  log "pip install $TOKENIZERS"
  "$PYTHON" -m pip install --no-deps "$TOKENIZERS" || fail "pip could not build $TOKENIZERS (see above)"
fi
log "pip install the Termux pin set ($PINS)"
"$PYTHON" -m pip install --no-deps -r "$PINS" \
  || fail "pip install of the Termux pin set failed (see above): a package that is built here needs clang and rust"
log "pip install lola-deft (agent)"
"$PYTHON" -m pip install --no-deps "$SOURCE" || fail "pip install of lola-deft failed (see above)"

# 3. Termux's versions against what the agent and the pins require. Deliberate omissions are
# listed in the pin set ('#omitted NAME'): huggingface_hub's optional Rust accelerator, and the
# model package's sentence-transformers.
OMITTED=$(sed -n 's/^#omitted \([^ ]*\).*/\1/p' "$PINS" | paste -sd'|' -)
CONFLICTS=$("$PYTHON" -m pip check 2>&1 | grep -vE "^No broken requirements|requires (${OMITTED:-^$}),? which is not installed" || true)
if [ -n "$CONFLICTS" ]; then
  fail "Termux's packages do not fit the agent: $(printf '%s' "$CONFLICTS" | paste -sd';' -) (pkg upgrade, or pip install the version named)"
fi

# 4. Check every import the agent needs, naming the one that is broken.
for module in numpy torch transformers peft grpc google.protobuf psutil prometheus_client \
              safetensors tokenizers lola_deft.device_agent.agent; do
  "$PYTHON" -c "import $module" 2>/dev/null \
    || fail "import $module failed after installation; reinstall it (pkg install python-${module%%.*} or pip install ${module%%.*}) and run this script again"
done
"$PYTHON" -m lola_deft.cli.main agent --help >/dev/null || fail "deft agent --help failed"

log "installed. Run an agent, e.g.:"
echo "  deft agent --coordinator EDGE_SERVER:50052 --tls-ca ~/.deft/ca.pem \\"
echo "      --tls-cert ~/.deft/PHONE_ID.pem --tls-key ~/.deft/PHONE_ID.key --threads 4 --memory-limit 1.5G"
echo "  (the certificate and key come from the edge server: deft certs device --out certs PHONE_ID)"
