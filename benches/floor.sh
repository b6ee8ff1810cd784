#!/usr/bin/env bash
# Where Roster's `/health/live` stands between the machine and the framework: the bare poem
# server, the same body through poem-openapi nested in a poem Route (Roster's framework,
# nothing of Roster's), the bare route served by a plain hyper HTTP/1 loop, and Roster
# (default configuration, access log on and written to a file, rate limits off), side by
# side, visited in turn by wrk -t2 -c100 for ROUNDS rounds. Each sample also reads the
# server's CPU time (user and system, /proc/PID/stat) and divides it by the requests served:
# the CPU one request costs, which the load client's share of the 2 cores does not blur.
# Writes benches/results/floor-<date>.jsonl: one line per sample, then medians and shares.
#   benches/floor.sh [ROSTER_BINARY] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
roster="${1:-target/release/roster}"
seconds="${2:-5}"
rounds="${3:-5}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q --example bare_baseline
[ "$roster" = target/release/roster ] && cargo build --release -q
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

servers=(bare openapi hyper roster)
declare -A url pid
for mode in bare openapi hyper; do
    port=$(free_port)
    ./target/release/examples/bare_baseline "127.0.0.1:$port" "${mode/bare/poem}" >/dev/null 2>&1 &
    pids+=($!)
    pid[$mode]=$!
    url[$mode]="http://127.0.0.1:$port"
done
port=$(free_port)
DATABASE_URL="sqlite://$work/roster.db" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
    "$roster" serve >"$work/roster.log" 2>&1 &
pids+=($!)
pid[roster]=$!
url[roster]="http://127.0.0.1:$port"
for name in "${servers[@]}"; do
    for _ in $(seq 1 50); do curl -fs "${url[$name]}/health/live" >/dev/null && break; sleep 0.1; done
    wrk -t2 -c100 -d2s "${url[$name]}/health/live" >/dev/null  # warm-up
done

mkdir -p benches/results
out="benches/results/floor-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"roster\":\"$roster\",\"commit\":\"$(git rev-parse --short HEAD)\",\"command\":\"benches/floor.sh $*\"}" | tee "$out"
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
ticks_per_sec=$(getconf CLK_TCK)
for round in $(seq 1 "$rounds"); do
    for name in "${servers[@]}"; do
        read -r user0 sys0 < <(cpu_ticks "${pid[$name]}")
        report=$(wrk -t2 -c100 -d"${seconds}s" "${url[$name]}/health/live")
        read -r user1 sys1 < <(cpu_ticks "${pid[$name]}")
        rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$report")
        requests=$(awk '/requests in/ {print $1}' <<<"$report")
        python3 -c "import json,sys; u,s,r,t=map(float,sys.argv[1:5]); print(json.dumps({'round':$round,'server':'$name','rps':$rps,'cpu_us_per_request':{'user':round(u/t/r*1e6,2),'system':round(s/t/r*1e6,2)}}))" \
            $((user1 - user0)) $((sys1 - sys0)) "$requests" "$ticks_per_sec" | tee -a "$out"
    done
done
python3 - "$out" "${servers[@]}" <<'PY' | tee -a "$out"
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"round"' in l]
med = {s: statistics.median(l["rps"] for l in lines if l["server"] == s) for s in sys.argv[2:]}
cpu = {s: {k: round(statistics.median(l["cpu_us_per_request"][k] for l in lines if l["server"] == s), 2)
           for k in ("user", "system")} for s in sys.argv[2:]}
print(json.dumps({"summary": "medians", "rps": med,
                  "of_bare": {s: round(med[s] / med["bare"], 3) for s in med},
                  "roster_of_openapi": round(med["roster"] / med["openapi"], 3),
                  "cpu_us_per_request": cpu}))
PY
echo "results: $out"
