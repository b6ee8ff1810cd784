#!/usr/bin/env bash
# A/B of the PostgreSQL cached read paths between two binaries (e.g. two read-barrier
# designs), alternately, in one run, over one database: PostgreSQL, USERS seeded users,
# wrk -t2 -c64, SECONDS per scenario, ROUNDS rounds.
#   benches/barrier_ab.sh OLD_BINARY [USERS] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1"; users="${2:-100000}"; seconds="${3:-10}"; rounds="${4:-3}"
pg="${BENCH_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q --features postgres
new="$PWD/target/release/roster"
work="$(mktemp -d)"; pid=""
db_url="${pg%/*}/roster_bench_ab"
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; psql "$pg" -qc 'DROP DATABASE IF EXISTS roster_bench_ab' || true; }
trap cleanup EXIT
export LUA_DIR="$PWD/benches/load"
mkdir -p benches/results
out="benches/results/barrier-ab-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores\",\"old\":\"$old\",\"command\":\"benches/barrier_ab.sh $*\"}" | tee "$out"
psql "$pg" -qc 'DROP DATABASE IF EXISTS roster_bench_ab' -c 'CREATE DATABASE roster_bench_ab'
DATABASE_URL="$db_url" "$new" seed --users "$users" >/dev/null
run_one() { # label binary
    local label="$1" bin="$2" port base
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    base="http://127.0.0.1:$port"
    DATABASE_URL="$db_url" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
        JWT_SECRET=bench-secret-bench-secret-bench-secret \
        FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        "$bin" serve >"$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.1; done
    ROSTER_TOKEN=$(curl -fs -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    export ROSTER_TOKEN
    for id in $(seq 1 1000); do echo "url = \"$base/api/v1/users/$id\""; done >"$work/urls"
    curl -fs -K "$work/urls" -H "Authorization: Bearer $ROSTER_TOKEN" >/dev/null
    curl -fs -H "Authorization: Bearer $ROSTER_TOKEN" "$base/api/v1/dashboard/stats" >/dev/null
    SCENARIO="$label/dashboard_cached" wrk -t2 -c64 -d"${seconds}s" -s benches/load/simple.lua \
        "$base/api/v1/dashboard/stats" | grep '^{' | tee -a "$out"
    SCENARIO="$label/user_by_id" wrk -t2 -c64 -d"${seconds}s" -s benches/load/user_by_id.lua \
        "$base" | grep '^{' | tee -a "$out"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
for r in $(seq 1 "$rounds"); do
    run_one "old" "$old"
    run_one "new" "$new"
done
echo "results: $out"
