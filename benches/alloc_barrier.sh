#!/usr/bin/env bash
# What the allocator's purge delay and the read barrier's batching do, per request: the
# cached dashboard for SECONDS on each backend (wrk -t2 -c64, 100k users), with the page
# faults per request (`minflt` of /proc/PID/stat), CPU ticks, and on PostgreSQL the
# barrier's requests per read (from /metrics); then anonymous memory right after a login
# and 2.5 s later (idle memory given back by the purging thread).
#   benches/alloc_barrier.sh [USERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"; seconds="${2:-8}"
pg_server="${BENCH_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
cargo build --release -q --features postgres
ROSTER_BIN="$PWD/target/release/roster"
. benches/lib.sh
db=roster_bench_alloc
trap 'cleanup; psql "$pg_server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true' EXIT
export LUA_DIR="$PWD/benches/load"
mkdir -p benches/results
out="benches/results/alloc-barrier-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"commit\":\"$(git rev-parse --short HEAD)\",\"users\":$users,\"seconds\":$seconds,\"command\":\"benches/alloc_barrier.sh $users $seconds\"}" | tee "$out"
metric() { curl -fs "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
run() { # label DATABASE_URL
    local label="$1"
    start_server "$2"
    # Measured after a login's hash; start-up's own hash is given back first.
    sleep 3
    curl -fs -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' >/dev/null
    sleep 0.1
    local after_login; after_login=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    sleep 2.5
    local idle; idle=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    wrk -t2 -c64 -d3s -s benches/load/simple.lua "$base/api/v1/dashboard/stats" >/dev/null
    local f0 t0 r0 q0 f1 t1 r1 q1
    f0=$(awk '{print $10}' "/proc/$pid/stat"); t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    r0=$(metric "$base" coherence_barrier_reads_total); q0=$(metric "$base" coherence_barrier_requests_total)
    SCENARIO="$label/dashboard_cached" wrk -t2 -c64 -d"${seconds}s" -s benches/load/simple.lua \
        "$base/api/v1/dashboard/stats" | grep '^{' >"$work/wrk"
    f1=$(awk '{print $10}' "/proc/$pid/stat"); t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    r1=$(metric "$base" coherence_barrier_reads_total); q1=$(metric "$base" coherence_barrier_requests_total)
    python3 - "$work/wrk" "$((f1 - f0))" "$((t1 - t0))" "${r0:-0}" "${r1:-0}" "${q0:-0}" "${q1:-0}" "$after_login" "$idle" <<'PY' | tee -a "$out"
import json, sys
w = json.loads(open(sys.argv[1]).read())
faults, ticks, r0, r1, q0, q1, login_kb, idle_kb = sys.argv[2:]
reads, reqs = float(r1) - float(r0), float(q1) - float(q0)
w.update({"page_faults_per_request": round(int(faults) / w["requests"], 3),
          "cpu_ticks": int(ticks),
          "requests_per_barrier_read": round(reqs / reads, 1) if reads else None,
          "rss_anon_mb_after_login": round(int(login_kb) / 1024, 1),
          "rss_anon_mb_2_5s_later": round(int(idle_kb) / 1024, 1)})
print(json.dumps(w))
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
DATABASE_URL="sqlite://$work/bench.db" "$ROSTER_BIN" seed --users "$users" >/dev/null
run sqlite "sqlite://$work/bench.db"
psql "$pg_server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg_url="${pg_server%/*}/$db"
DATABASE_URL="$pg_url" "$ROSTER_BIN" seed --users "$users" >/dev/null
psql "$pg_url" -qc "VACUUM ANALYZE" -c "CHECKPOINT"
run postgres "$pg_url"
echo "results: $out"
