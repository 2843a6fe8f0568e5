#!/usr/bin/env bash
# API fuzzing (issue 10): schemathesis against the built `bulkhead` binary on its embedded
# database, driven by the server's own /openapi.json. Fails on any 5xx answer and on any answer
# whose body does not match the document.
#
#   bash .ci/schemathesis.sh                      # after a build (target/debug/bulkhead)
#   SCHEMATHESIS_EXAMPLES=50 SCHEMATHESIS_SEED=7 bash .ci/schemathesis.sh
#
# The operator API (docs/operator-api.md) gets its own passes, driven by its own document
# (/operator/v1/openapi.json on the operator listener, here loopback TCP) with operator keys made
# by `bulkhead operator key create` before the server starts; SCHEMATHESIS_OPERATOR_EXAMPLES
# (default 10) keeps them to a minute or two.
#
# Everything stays on this machine: the server listens on 127.0.0.1, runs no job worker (so no
# webhook is ever delivered anywhere), and schemathesis is told the loopback base URL and runs
# with every proxy variable removed. Only the install step reaches out, to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

version="4.32.5"
examples="${SCHEMATHESIS_EXAMPLES:-100}"
operator_examples="${SCHEMATHESIS_OPERATOR_EXAMPLES:-10}"
operator_budget="${SCHEMATHESIS_OPERATOR_TIMEOUT:-120}"
seed="${SCHEMATHESIS_SEED:-1}"
budget="${SCHEMATHESIS_TIMEOUT:-240}"
bin="${BULKHEAD_BIN:-target/debug/bulkhead}"
venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead/schemathesis-$version}"

say "schemathesis $version (venv $venv)"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
    python=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            python="$candidate"
            break
        fi
    done
    if [[ -z "$python" ]]; then
        echo "FAILED: schemathesis needs Python 3 (python3.11 or python3), which was not found" >&2
        exit 1
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
"$venv/bin/schemathesis" --version

if [[ ! -x "$bin" ]]; then
    say "building the bulkhead binary"
    cargo build --locked -p bulkhead-server --bin bulkhead
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-schemathesis.XXXXXX")"
chmod 0755 "$work"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

export BULKHEAD_DATA_DIR="$work/data"
export RUST_LOG="${RUST_LOG:-warn}"
unset DATABASE_URL BULKHEAD_APP_DATABASE_URL BULKHEAD_KEY_PEPPER BULKHEAD_MASTER_KEY \
    BULKHEAD_AUDIT_LOG_KEY REDIS_URL

say "a tenant and its admin key (embedded database in $BULKHEAD_DATA_DIR)"
"$bin" tenant create --slug schemathesis --name "Schemathesis CI" >"$work/tenant.json" \
    2>"$work/tenant.log" || { cat "$work/tenant.log" >&2; exit 1; }
read -r key_id key < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(t["admin_api_key_id"], t["admin_api_key"])' "$work/tenant.json")
# A second key, holding every scope the admin key holds, for the operations that change keys
# (revoke, rotate, narrow, revoke-all): schemathesis reuses ids it saw in answers, so in a
# pass that can also list keys it would soon revoke the very key it runs with.
"$bin" key list --tenant schemathesis >"$work/keys.json" 2>"$work/keys.log" \
    || { cat "$work/keys.log" >&2; exit 1; }
scopes="$(python3 -c '
import json, sys
keys = json.load(open(sys.argv[1]))
keys = keys["data"] if isinstance(keys, dict) else keys
print(",".join(keys[0]["scopes"]))' "$work/keys.json")"
"$bin" key create --tenant schemathesis --scopes "$scopes" --principal schemathesis-keys \
    >"$work/key2.json" 2>"$work/key2.log" || { cat "$work/key2.log" >&2; exit 1; }
read -r key2_id key2 < <(python3 -c '
import json, sys
k = json.load(open(sys.argv[1]))
print(k["api_key"]["id"], k["key"])' "$work/key2.json")

# Two operator keys: one for every operator operation but revocation, one for the pass that
# revokes (which could otherwise revoke the key it runs with).
say "two operator keys"
for name in op op2; do
    "$bin" operator key create --name "schemathesis $name" --scope tenants:read \
        --scope tenants:write --scope tenants:delete --scope operators:manage \
        >"$work/$name.json" 2>"$work/$name.log" || { cat "$work/$name.log" >&2; exit 1; }
done
op_key="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' "$work/op.json")"
op_key2="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' "$work/op2.json")"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
operator_port="$(free_port)"
base="http://127.0.0.1:$port"
operator_base="http://127.0.0.1:$operator_port"
say "bulkhead serve on $base, operator API on $operator_base (no worker: nothing is ever delivered)"
"$bin" serve --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --issuer "$base" --no-worker \
    --operator-listen "127.0.0.1:$operator_port" \
    --webhook-deny-cidrs 0.0.0.0/0,::/0 >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 450); do
    if curl -fsS --noproxy '*' "$base/readyz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "FAILED: the server exited before it was ready" >&2
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.2
done
curl -fsS --noproxy '*' "$base/readyz" >/dev/null

# The document names two schemes: `bearer` (the tenant API) and `client_basic` (OAuth clients:
# the key's id and the key). Schemathesis applies each where an operation asks for it.
cat >"$work/schemathesis.toml" <<'EOF'
[auth.openapi.bearer]
bearer = "${BULKHEAD_ST_KEY}"

[auth.openapi.client_basic]
username = "${BULKHEAD_ST_KEY_ID}"
password = "${BULKHEAD_ST_KEY}"

[auth.openapi.operator_key]
bearer = "${BULKHEAD_ST_OP_KEY}"
EOF

# CPython 3.11 before 3.11.8 (gh-106905) can raise SystemError "AST constructor recursion depth
# mismatch" from ast.parse deep in a call stack. Hypothesis parses source files only to describe
# lambdas in reprs, and already treats an unparseable source as "<unknown>": turn that one
# SystemError into a SyntaxError, so a description cannot abort a test case.
mkdir -p "$work/pyshim"
cat >"$work/pyshim/sitecustomize.py" <<'EOF'
import ast

_parse = ast.parse


def _parse_or_syntax_error(*args, **kwargs):
    try:
        return _parse(*args, **kwargs)
    except SystemError as err:
        if "recursion depth mismatch" not in str(err):
            raise
        raise SyntaxError(str(err)) from err


ast.parse = _parse_or_syntax_error
EOF

# The operator API's archive upload (`POST /operator/v1/tenant-imports`) takes
# `application/x-tar`, which schemathesis cannot generate by itself: arbitrary bytes, which the
# server must refuse as an archive that does not check out (422), never a 5xx.
cat >"$work/pyshim/bulkhead_st_hooks.py" <<'EOF'
from hypothesis import strategies as st

import schemathesis

schemathesis.openapi.media_type("application/x-tar", st.binary(max_size=4096))
EOF

# Operations that revoke, rotate or loosen an existing key run in their own pass, with the
# second key, and without the list of keys (which would show that key's id).
key_ops='^(POST /v1/api-keys/\{id\}/(revoke|rotate)|PATCH /v1/api-keys/\{id\}|POST /v1/api-keys/revoke-all)$'
key_pass='^(POST /v1/api-keys|GET /v1/api-keys/\{id\}|POST /v1/api-keys/\{id\}/(revoke|rotate)|PATCH /v1/api-keys/\{id\}|POST /v1/api-keys/revoke-all)$'

run_pass() {
    run_against "$base" "$examples" "$budget" "" "$@"
}

# run_against BASE EXAMPLES BUDGET OPERATOR_KEY NAME KEY_ID KEY [schemathesis options…]
run_against() {
    local url="$1" count="$2" limit="$3" op_secret="$4" name="$5" id="$6" secret="$7"
    shift 7
    local document="$url/openapi.json"
    [[ -n "$op_secret" ]] && document="$url/operator/v1/openapi.json"
    say "schemathesis, $name: $count examples per operation, seed $seed, at most ${limit}s"
    # From the work directory: schemathesis keeps a cache (.schemathesis/) in its working directory.
    (cd "$work" && env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy \
        NO_PROXY='*' no_proxy='*' SCHEMATHESIS_TELEMETRY=false PYTHONPATH="$work/pyshim" SCHEMATHESIS_HOOKS=bulkhead_st_hooks \
        BULKHEAD_ST_KEY="$secret" BULKHEAD_ST_KEY_ID="$id" BULKHEAD_ST_OP_KEY="$op_secret" \
        timeout "$limit" "$venv/bin/schemathesis" --no-color --config-file "$work/schemathesis.toml" \
        run "$document" \
        --url "$url" \
        --checks not_a_server_error,response_schema_conformance \
        --phases examples,coverage,fuzzing \
        --max-examples "$count" \
        --seed "$seed" \
        --workers 2 \
        --request-timeout 10 \
        --max-redirects 0 \
        --suppress-health-check all \
        --warnings off \
        --report junit,har --report-dir "$work/report/$name" \
        "$@")
}

status=0
run_pass all-but-key-changes "$key_id" "$key" --exclude-name-regex "$key_ops" || status=$?
run_pass key-changes "$key2_id" "$key2" --include-name-regex "$key_pass" || status=$?
op_revoke='^POST /operator/v1/operator-keys/\{id\}/revoke$'
op_key_pass='^(POST /operator/v1/operator-keys|POST /operator/v1/operator-keys/\{id\}/revoke)$'
run_against "$operator_base" "$operator_examples" "$operator_budget" "$op_key" \
    operator-all-but-revoke "" "" --exclude-name-regex "$op_revoke" || status=$?
run_against "$operator_base" "$operator_examples" "$operator_budget" "$op_key2" \
    operator-revoke "" "" --include-name-regex "$op_key_pass" || status=$?

if ((status != 0)); then
    echo "schemathesis FAILED (exit $status); the server's log (warnings and errors):" >&2
    grep -E '"level":"(ERROR|WARN)"' "$work/serve.log" | grep -v 'bulkhead::audit' | tail -n 40 >&2 || true
    if [[ -n "${SCHEMATHESIS_KEEP:-}" ]]; then
        cp -r "$work/report" "$SCHEMATHESIS_KEEP" 2>/dev/null || true
        cp "$work/serve.log" "$SCHEMATHESIS_KEEP/" 2>/dev/null || true
    fi
    exit "$status"
fi
[[ -n "${SCHEMATHESIS_KEEP:-}" ]] && cp -r "$work/report" "$SCHEMATHESIS_KEEP" 2>/dev/null
echo "schemathesis passed"
