#!/usr/bin/env bash
# The PostgreSQL dashboard statement at a given size, timed by the server itself on a
# freshly seeded, VACUUM ANALYZEd database: seven runs of `EXPLAIN (ANALYZE, TIMING OFF)`
# (the statement's own execution time) and of `EXPLAIN (ANALYZE)` (per-node timing: a clock
# read around every row, which inflates an aggregate over a million rows), and whether
# workers ran in parallel. The statement is the one in src/store/postgres/mod.rs.
#   benches/pg_dashboard.sh [USERS]
# Writes benches/results/pg-dashboard-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-1000000}"
server="${BENCH_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
cargo build --release -q --features postgres
db=roster_bench_dashboard
psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
trap 'psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
url="${server%/*}/$db"
DATABASE_URL="$url" ./target/release/roster seed --users "$users" >/dev/null
psql "$url" -qc "VACUUM ANALYZE" -c "CHECKPOINT"
mkdir -p benches/results
out="benches/results/pg-dashboard-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"postgres\":\"$(psql "$server" -Atc 'SHOW server_version')\",\"max_parallel_workers_per_gather\":$(psql "$server" -Atc 'SHOW max_parallel_workers_per_gather'),\"users\":$users,\"command\":\"benches/pg_dashboard.sh $users\"}" | tee "$out"
for run in 1 2 3 4 5 6 7; do for timing in off on; do
    psql "$url" -AtXc "EXPLAIN (ANALYZE, TIMING $timing, FORMAT JSON)
        SELECT COUNT(*), COUNT(*) FILTER (WHERE is_active), COUNT(*) FILTER (WHERE is_superuser),
               COUNT(*) FILTER (WHERE created_at >= now() - interval '1 day'),
               COUNT(*) FILTER (WHERE created_at >= now() - interval '7 days')
        FROM users" | python3 -c "
import json, sys
plan = json.load(sys.stdin)[0]
def workers(node):
    return max([node.get('Workers Launched', 0)] + [workers(c) for c in node.get('Plans', [])])
print(json.dumps({'run': $run, 'per_node_timing': '$timing', 'execution_ms': round(plan['Execution Time'], 1),
                  'workers_launched': workers(plan['Plan'])}))" | tee -a "$out"
done; done
echo "results: $out"
