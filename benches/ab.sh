#!/usr/bin/env bash
# A/B of two builds on one path, interleaved so both see the same machine: the bare poem
# server and each binary (default configuration, access log on and written to a file, rate
# limits off, an empty SQLite file) run side by side, and wrk -t2 -c100 visits each in turn
# for ROUNDS rounds. Writes benches/results/ab-<date>.jsonl: one line per sample, then the
# medians and each binary's share of the bare server. Each binary has a superuser (id 1) and
# is visited with its token, so PATH may be an authenticated one (`/api/v1/users/1`,
# `/api/v1/dashboard/stats`); the bare server always answers `/health/live`.
#   benches/ab.sh OLD_BINARY NEW_BINARY [SECONDS] [ROUNDS] [PATH]
# e.g. build the base commit with `git worktree add /tmp/base <commit>` and
# `cargo build --release` there, then benches/ab.sh /tmp/base/target/release/roster target/release/roster
set -euo pipefail
cd "$(dirname "$0")/.."
old="${1:?old binary}"
new="${2:?new binary}"
seconds="${3:-5}"
rounds="${4:-5}"
path="${5:-/health/live}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q --example bare_baseline
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A url
port=$(free_port)
./target/release/examples/bare_baseline "127.0.0.1:$port" >/dev/null 2>&1 &
pids+=($!)
url[bare]="http://127.0.0.1:$port"
for name in old new; do
    port=$(free_port)
    bin="$old"; [ "$name" = new ] && bin="$new"
    DATABASE_URL="sqlite://$work/$name.db" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
        FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        "$bin" serve >"$work/$name.log" 2>&1 &
    pids+=($!)
    url[$name]="http://127.0.0.1:$port"
done
declare -A target
target[bare]="${url[bare]}/health/live"
target[old]="${url[old]}$path"
target[new]="${url[new]}$path"
declare -A token
for name in bare old new; do
    for _ in $(seq 1 50); do curl -fs "${url[$name]}/health/live" >/dev/null && break; sleep 0.1; done
done
for name in old new; do
    token[$name]=$(curl -fs -X POST "${url[$name]}/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -fs -H "Authorization: Bearer ${token[$name]}" "${target[$name]}" >/dev/null \
        || { echo "$name: $path does not answer 200"; exit 1; }
done
visit() { # NAME SECONDS: wrk's report
    local auth=()
    [ "$1" != bare ] && auth=(-H "Authorization: Bearer ${token[$1]}")
    wrk -t2 -c100 -d"$2" "${auth[@]}" "${target[$1]}"
}
for name in bare old new; do
    visit "$name" 2s >/dev/null  # warm-up
done

mkdir -p benches/results
out="benches/results/ab-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"old\":\"$old\",\"new\":\"$new\",\"commit\":\"$(git rev-parse --short HEAD)\",\"path\":\"$path\",\"command\":\"benches/ab.sh $*\"}" | tee "$out"
for round in $(seq 1 "$rounds"); do
    for name in bare old new; do
        rps=$(visit "$name" "${seconds}s" | awk '/Requests\/sec/ {print int($2)}')
        echo "{\"round\":$round,\"server\":\"$name\",\"rps\":$rps}" | tee -a "$out"
    done
done
python3 - "$out" <<'EOF' | tee -a "$out"
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"round"' in l]
med = {s: statistics.median(l["rps"] for l in lines if l["server"] == s) for s in ("bare", "old", "new")}
print(json.dumps({"summary": "medians", "rps": med,
                  "old_of_bare": round(med["old"] / med["bare"], 3),
                  "new_of_bare": round(med["new"] / med["bare"], 3),
                  "new_of_old": round(med["new"] / med["old"], 3)}))
EOF
echo "results: $out"
