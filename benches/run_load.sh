#!/usr/bin/env bash
# Load scenarios against the release binary on SQLite with 100k seeded users, with wrk on
# the same machine. Prints one JSON line per scenario (req/s, p50/p95/p99, errors) and
# writes them to benches/results/load-<date>.jsonl.
#   benches/run_load.sh [USERS] [SECONDS]
# LOAD_ROUNDS=N runs the bare server, /health/live, the cached dashboard and user by id N
# times, interleaved (each line carries its round), then the list page and mixed once, and
# ends with a summary line: each scenario's median and the target ratios of the medians.
# Mixed runs twice: saturated (as fast as 100 connections go) and paced (10 ms think time).
# On a shared machine one 15 s sample per scenario moved those ratios by ±15% between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"
seconds="${2:-15}"
. benches/lib.sh
start_seeded_server "$users"
memory_sampler &

mkdir -p benches/results
out="benches/results/load-$(date -u +%Y%m%d-%H%M%S).jsonl"
rounds="${LOAD_ROUNDS:-1}"
round=""   # set while the interleaved rounds run (with LOAD_ROUNDS > 1): lines then carry it
tag() { if [ -n "$round" ]; then sed "s/^{/{\"round\":$round,/"; else cat; fi; }
run() { # name connections path|script
    local name="$1" conns="$2" target="$3"
    if [[ "$target" == *.lua ]]; then
        SCENARIO="$name" wrk -t2 -c"$conns" -d"${seconds}s" -s "$target" "$base" | grep '^{' | tag | tee -a "$out"
    else
        SCENARIO="$name" wrk -t2 -c"$conns" -d"${seconds}s" -s benches/load/simple.lua "$base$target" | grep '^{' | tag | tee -a "$out"
    fi
    echo "{\"memory_after\":\"$name\",$(memory_json)}" | tag | tee -a "$out"
}
# The machine's limit, in the same run: a bare poem server answering a small JSON body.
cargo build --release -q --example bare_baseline
bare_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/examples/bare_baseline "127.0.0.1:$bare_port" &
bare_pid=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$bare_port/health/live" >/dev/null && break; sleep 0.1; done
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/^Mem/ {print $2}') GiB\",\"users\":$users,\"seconds\":$seconds,\"rounds\":$rounds,\"binary\":\"$ROSTER_BIN\",\"commit\":\"$(git rev-parse --short HEAD)\",\"command\":\"LOAD_ROUNDS=$rounds benches/run_load.sh $users $seconds\"}" | tee "$out"
echo "{\"memory_after\":\"start\",$(memory_json)}" | tee -a "$out"
curl -fs -H "Authorization: Bearer $ROSTER_TOKEN" "$base/api/v1/dashboard/stats" >/dev/null   # warm the cache
# Warm the server itself (worker threads, allocator, log file) so the first scenario does not
# pay for it: in earlier runs /health/live, measured first, came out below the cached
# dashboard, which does strictly more per request. Not recorded.
wrk -t2 -c100 -d3s "$base/health/live" >/dev/null
for r in $(seq 1 "$rounds"); do
    if [ "$rounds" -gt 1 ]; then round="$r"; fi
    SCENARIO=bare_baseline wrk -t2 -c100 -d"${seconds}s" -s benches/load/simple.lua "http://127.0.0.1:$bare_port/health/live" | grep '^{' | tag | tee -a "$out"
    run d_health_live_ceiling 100 /health/live
    run a_dashboard_cached 100 /api/v1/dashboard/stats
    run e_user_by_id_cached 100 benches/load/user_by_id.lua
done
round=""   # the rest runs once
kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true
run b_list_filtered_page 50 "/api/v1/users?is_active=true&size=50"
run c_mixed 100 benches/load/mixed.lua
# The same mix with 10 ms of think time per connection: about 7k req/s, above the target's
# 6k, where the tail is the service's and not the saturated queue's.
THINK_MS=10 run c_mixed_paced 100 benches/load/mixed.lua
echo "{\"access_log_lines\":$(wc -l <"$work/access.log"),$(memory_json)}" | tee -a "$out"
if [ "$rounds" -gt 1 ]; then
    python3 - "$out" <<'PY' | tee -a "$out"
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rps = {}
for l in lines:
    if "round" in l and "scenario" in l:
        rps.setdefault(l["scenario"], []).append(l["rps"])
med = {k: statistics.median(v) for k, v in rps.items()}
once = {l["scenario"]: l for l in lines if "scenario" in l and "round" not in l}
health = med["d_health_live_ceiling"]
print(json.dumps({"summary": "medians over rounds", "rps": {k: round(v) for k, v in med.items()},
    "health_live_of_bare": round(health / med["bare_baseline"], 3),
    "dashboard_of_health_live": round(med["a_dashboard_cached"] / health, 3),
    "user_by_id_of_health_live": round(med["e_user_by_id_cached"] / health, 3),
    "list_page_of_health_live": round(once["b_list_filtered_page"]["rps"] / health, 3)}))
PY
fi
echo "results: $out"
