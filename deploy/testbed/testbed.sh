#!/usr/bin/env bash
# Thin wrapper: `deft testbed up|down|run ...` from a checkout (uses .venv when present).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -x "$root/.venv/bin/deft" ]; then exec "$root/.venv/bin/deft" testbed "$@"; fi
exec deft testbed "$@"
