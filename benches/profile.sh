#!/usr/bin/env bash
# Where the server's CPU goes under one load scenario: `perf record -g` on the release binary
# (SQLite, seeded users) while wrk runs the scenario as run_load.sh does. Writes
# benches/results/profile-<scenario>-<date>.txt: the wrk result line, then perf's flat
# profile by symbol (self time) and by shared object.
#   benches/profile.sh health_live|dashboard|user_by_id|list|mixed [USERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?scenario: health_live, dashboard, user_by_id, list or mixed}"
users="${2:-100000}"
seconds="${3:-12}"
command -v perf >/dev/null || { apt-get update -q && apt-get install -y -q linux-perf; }
. benches/lib.sh
start_seeded_server "$users"
case "$scenario" in
    health_live) conns=100; target=(-s benches/load/simple.lua "$base/health/live") ;;
    dashboard) conns=100; target=(-s benches/load/simple.lua "$base/api/v1/dashboard/stats") ;;
    user_by_id) conns=100; target=(-s benches/load/user_by_id.lua "$base") ;;
    list) conns=50; target=(-s benches/load/simple.lua "$base/api/v1/users?is_active=true&size=50") ;;
    mixed) conns=100; target=(-s benches/load/mixed.lua "$base") ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
mkdir -p benches/results
out="benches/results/profile-$scenario-$(date -u +%Y%m%d-%H%M%S).txt"
{
    echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD)"
    echo "# benches/profile.sh $scenario $users $seconds: wrk -t2 -c$conns for ${seconds}s, perf record -g on the server for the middle $((seconds - 4))s"
} >"$out"
SCENARIO="$scenario" wrk -t2 -c"$conns" -d"${seconds}s" "${target[@]}" >"$work/wrk.out" &
wrk_pid=$!
sleep 2
perf record -q -F 999 -g -p "$pid" -o "$work/perf.data" -- sleep $((seconds - 4)) 2>/dev/null
wait "$wrk_pid"
grep '^{' "$work/wrk.out" >>"$out"
{
    echo
    echo "## Self time by symbol (perf report --no-children, ≥ 0.7%)"
    perf report -i "$work/perf.data" --no-children --stdio -g none --percent-limit 0.7 2>/dev/null | grep -E '^ +[0-9]'
    echo
    echo "## Roster's own code and its crates (self time, ≥ 0.3%)"
    perf report -i "$work/perf.data" --no-children --stdio -g none --dsos roster --percent-limit 0.3 2>/dev/null | grep -E '^ +[0-9]'
    echo
    echo "## By shared object"
    perf report -i "$work/perf.data" --no-children --stdio -g none --sort dso 2>/dev/null | grep -E '^ +[0-9]'
    echo
    echo "## By thread name"
    perf report -i "$work/perf.data" --no-children --stdio -g none --sort comm 2>/dev/null | grep -E '^ +[0-9]'
} >>"$out"
echo "results: $out"
