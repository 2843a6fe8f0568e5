#!/usr/bin/env bash
# `bulkhead probe` against the built binary on its embedded database (issue 10): two fresh
# tenants, a server on a free loopback port, every operation of its /openapi.json attacked as one
# tenant against the other. Any leak or unexpected answer fails CI. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -q -p bulkhead-server --bin bulkhead
bin="$PWD/target/debug/bulkhead"
data="$(mktemp -d)"
# PostgreSQL runs as the `postgres` user when we are root: it must be able to reach the directory.
chmod 0755 "$data"
log="$data/serve.log"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

key_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_api_key"])'; }
# The embedded cluster belongs to one process at a time: onboard before serving.
key_a="$("$bin" tenant create --slug probe-victim --name "Probe victim" --data-dir "$data" 2>/dev/null | key_of)"
key_b="$("$bin" tenant create --slug probe-attacker --name "Probe attacker" --data-dir "$data" 2>/dev/null | key_of)"
# An operator key: the probe also proves no tenant credential opens an operator route and the
# operator key opens no tenant route (the operator API on its own loopback port).
op_key="$("$bin" operator key create --name probe --scope tenants:read --scope tenants:write \
    --scope tenants:delete --scope operators:manage --data-dir "$data" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
operator_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --base-domain probe.test --no-worker \
    --operator-listen "127.0.0.1:$operator_port" >"$log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    if curl -sf "$base/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log"; echo "the server exited" >&2; exit 1; fi
    sleep 0.5
done
curl -sf "$base/readyz" >/dev/null || { cat "$log"; echo "the server did not become ready" >&2; exit 1; }

BULKHEAD_PROBE_KEY_A="$key_a" BULKHEAD_PROBE_KEY_B="$key_b" BULKHEAD_PROBE_OPERATOR_KEY="$op_key" \
    "$bin" probe --base-url "$base" --base-domain probe.test \
    --operator-url "http://127.0.0.1:$operator_port" \
    --tenant-a probe-victim --tenant-b probe-attacker
