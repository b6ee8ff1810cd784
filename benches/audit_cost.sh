#!/usr/bin/env bash
# The audit trail's cost on the write path: the mixed scenario (30% writes) against a
# binary built before the audit trail and the current one, alternately, in one run
# (SQLite, seeded users; webhooks off, as by default).
#   benches/audit_cost.sh OLD_BINARY [USERS] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1"; users="${2:-100000}"; seconds="${3:-15}"; rounds="${4:-2}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q
new="$PWD/target/release/roster"
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export LUA_DIR="$PWD/benches/load" MAX_ID="$users"
out="benches/results/audit-cost-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores\",\"old\":\"$old\",\"command\":\"benches/audit_cost.sh $*\"}" | tee "$out"
DATABASE_URL="sqlite://$work/before_audit.db" "$old" seed --users "$users" >/dev/null
DATABASE_URL="sqlite://$work/with_audit.db" "$new" seed --users "$users" >/dev/null
run_one() { # label binary
    local label="$1" bin="$2" port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    DATABASE_URL="sqlite://$work/$label.db" BIND_ADDR="127.0.0.1:$port" \
        RATE_LIMIT_ENABLED=false FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        "$bin" serve >"$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
    ROSTER_TOKEN=$(curl -fs -X POST "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    export ROSTER_TOKEN
    SCENARIO="$label/c_mixed" wrk -t2 -c100 -d"${seconds}s" -s benches/load/mixed.lua \
        "http://127.0.0.1:$port" | grep '^{' | sed "s/^{/{\"binary\":\"$label\",/" | tee -a "$out"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
for r in $(seq 1 "$rounds"); do
    run_one "before_audit" "$old"
    run_one "with_audit" "$new"
done
echo "results: $out"
