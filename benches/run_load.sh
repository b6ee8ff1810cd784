#!/usr/bin/env bash
# Load scenarios against the release binary on SQLite with 100k seeded users, with wrk on
# the same machine. Prints one JSON line per scenario (req/s, p50/p95/p99, errors) and
# writes them to benches/results/load-<date>.jsonl.
#   benches/run_load.sh [USERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"
seconds="${2:-15}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
db="$work/load.db"
export DATABASE_URL="sqlite://$db"
./target/release/roster seed --users "$users" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
# Default configuration, but one load generator is one client IP: per-IP limits would
# measure the limiter, not the service.
BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
    FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
    ./target/release/roster serve >"$work/access.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.1; done
export ROSTER_TOKEN
ROSTER_TOKEN=$(curl -fs -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
export LUA_DIR="$PWD/benches/load" MAX_ID=$((users + 1))

mkdir -p benches/results
out="benches/results/load-$(date -u +%Y%m%d-%H%M%S).jsonl"
run() { # name connections path|script
    local name="$1" conns="$2" target="$3"
    if [[ "$target" == *.lua ]]; then
        SCENARIO="$name" wrk -t2 -c"$conns" -d"${seconds}s" -s "$target" "$base" | grep '^{' | tee -a "$out"
    else
        SCENARIO="$name" wrk -t2 -c"$conns" -d"${seconds}s" -s benches/load/simple.lua "$base$target" | grep '^{' | tee -a "$out"
    fi
}
curl -fs -H "Authorization: Bearer $ROSTER_TOKEN" "$base/api/v1/dashboard/stats" >/dev/null   # warm the cache
run d_health_live_ceiling 100 /health/live
run a_dashboard_cached 100 /api/v1/dashboard/stats
run b_list_filtered_page 50 "/api/v1/users?is_active=true&size=50"
run c_mixed 100 benches/load/mixed.lua
rss_kb=$(ps -o rss= -p "$pid" | tr -d ' ')
echo "{\"server_rss_mb_after\":$((rss_kb / 1024)),\"access_log_lines\":$(wc -l <"$work/access.log")}" | tee -a "$out"
echo "results: $out"
