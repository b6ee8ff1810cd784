#!/usr/bin/env bash
# Load scenarios against the release binary on SQLite with 100k seeded users, with wrk on
# the same machine. Prints one JSON line per scenario (req/s, p50/p95/p99, errors) and
# writes them to benches/results/load-<date>.jsonl.
#   benches/run_load.sh [USERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"
seconds="${2:-15}"
. benches/lib.sh
start_seeded_server "$users"

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
