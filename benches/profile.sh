#!/usr/bin/env bash
# Where the server's CPU goes under one load scenario: `perf record -g` on the release binary
# (SQLite, seeded users) while wrk runs the scenario as run_load.sh does. Writes
# benches/results/profile-<scenario>-<date>.txt: the wrk result line, then perf's flat
# profile by symbol (self time) and by shared object.
#   benches/profile.sh health_live|dashboard|user_by_id|list|mixed|bare [USERS] [SECONDS]
# `bare` profiles the bare poem server of run_load.sh on /health/live, for comparison.
# PROFILE_FRAME_POINTERS=1 builds with frame pointers (target/frame-pointers) and adds
# inclusive time per layer — each middleware, poem, tracing — which the flat profile
# cannot attribute.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?scenario: health_live, dashboard, user_by_id, list, mixed or bare}"
users="${2:-100000}"
seconds="${3:-12}"
command -v perf >/dev/null || { apt-get update -q && apt-get install -y -q linux-perf; }
if [ "${PROFILE_FRAME_POINTERS:-0}" = 1 ]; then
    RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/frame-pointers \
        cargo build --release -q --bin roster --example bare_baseline
    ROSTER_BIN="$PWD/target/frame-pointers/release/roster"
    bare_bin="$PWD/target/frame-pointers/release/examples/bare_baseline"
else
    cargo build --release -q --example bare_baseline
    bare_bin="$PWD/target/release/examples/bare_baseline"
fi
. benches/lib.sh
if [ "$scenario" = bare ]; then
    users=0
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bare_bin" "127.0.0.1:$port" &
    pid=$!  # lib.sh's cleanup stops it
    dso=bare_baseline
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 50); do curl -fs "$base/health/live" >/dev/null && break; sleep 0.1; done
    export LUA_DIR="$PWD/benches/load"
else
    start_seeded_server "$users"
    dso=roster
fi
case "$scenario" in
    bare) conns=100; target=(-s benches/load/simple.lua "$base/health/live") ;;
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
    echo "## The server's own code and its crates (self time, ≥ 0.3%)"
    perf report -i "$work/perf.data" --no-children --stdio -g none --dsos "$dso" --percent-limit 0.3 2>/dev/null | grep -E '^ +[0-9]' || true
    echo
    echo "## By shared object"
    perf report -i "$work/perf.data" --no-children --stdio -g none --sort dso 2>/dev/null | grep -E '^ +[0-9]'
    echo
    echo "## By thread name"
    perf report -i "$work/perf.data" --no-children --stdio -g none --sort comm 2>/dev/null | grep -E '^ +[0-9]'
    if [ "${PROFILE_FRAME_POINTERS:-0}" = 1 ]; then
        echo
        echo "## Inclusive time (self + callees) of Roster's layers, poem, hyper, tracing and metrics (≥ 0.5%)"
        perf report -i "$work/perf.data" --children --stdio -g none --percent-limit 0.5 2>/dev/null \
            | grep -E '^ +[0-9]' | grep -E 'roster::|poem|hyper::|tracing|metrics|moka|serde_json|memmove|mi_|do_syscall_64|__send|recv' | cut -c1-220
    fi
} >>"$out"
echo "results: $out"
