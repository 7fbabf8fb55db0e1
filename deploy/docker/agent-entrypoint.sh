#!/bin/sh
# Entry point of the agent image. Compose scales one agent service to N replicas and the certs
# service made N device certificates: each replica claims one (mkdir is atomic on the shared
# claims volume) and keeps it across its own restarts (the claim records its hostname).
# Without a certificate folder it runs `deft agent` with the arguments as given (e.g. a Jetson
# or laptop passing its own --tls-* files, or --insecure).
set -eu
certs=${DEFT_CERTS:-/certs}
claims=${DEFT_CLAIMS:-/var/lib/lola-deft-claims}
me=${DEFT_CLAIM_OWNER:-$(hostname)}  # the container's hostname: stable across its restarts

run_as() {
    cert=$1
    exec deft agent --id "$(basename "$cert" .pem)" --tls-cert "$cert" \
        --tls-key "${cert%.pem}.key" --tls-ca "$certs/ca.pem" "$@"
}

if [ ! -f "$certs/ca.pem" ] || [ ! -d "$certs/devices" ]; then
    exec deft agent "$@"
fi
for cert in "$certs"/devices/*.pem; do
    id=$(basename "$cert" .pem)
    if [ "$(cat "$claims/$id/owner" 2>/dev/null || true)" = "$me" ]; then
        run_as "$cert" "$@"
    fi
done
for cert in "$certs"/devices/*.pem; do
    id=$(basename "$cert" .pem)
    if mkdir "$claims/$id" 2>/dev/null; then
        echo "$me" > "$claims/$id/owner"
        run_as "$cert" "$@"
    fi
done
echo "deft agent: error: every device certificate in $certs/devices is claimed; enrol more" \
    "with: docker compose run --rm certs-admin device ID" >&2
exit 2
