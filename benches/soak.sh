#!/usr/bin/env bash
# Soak: SECONDS of mixed traffic at 100 connections with ~1% malformed requests against the
# release binary on SQLite. Passes when there is no 5xx (a 503 with Retry-After from the
# hashing gate is load shed by design and counted apart), every created user is readable
# afterwards, and memory is flat after warm-up.  benches/soak.sh [SECONDS] [USERS]
# Writes benches/results/soak-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
users="${2:-10000}"
. benches/lib.sh
start_seeded_server "$users"
export CREATED_IDS="$work/created.txt"

( for _ in $(seq 1 $((seconds / 5))); do sleep 5; ps -o rss= -p "$pid" | tr -d ' '; done ) >"$work/rss.txt" &
sampler=$!
summary=$(wrk -t2 -c100 -d"${seconds}s" --timeout 10s -s benches/load/soak.lua "$base" | grep '^{')
wait "$sampler" || true
mkdir -p benches/results
out="benches/results/soak-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"commit\":\"$(git rev-parse --short HEAD)\",\"command\":\"benches/soak.sh $seconds $users\"}" >"$out"
echo "$summary" | tee -a "$out"

lost=$(python3 - "$base" "$ROSTER_TOKEN" "$CREATED_IDS" <<'PY'
import sys, urllib.request
base, token, path = sys.argv[1:]
ids = [line.strip() for line in open(path) if line.strip()]
lost = 0
for i in ids:
    req = urllib.request.Request(f"{base}/api/v1/users/{i}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req) as r:
            lost += r.status != 200
    except Exception:
        lost += 1
print(f"{len(ids)} {lost}")
PY
)
read -r created lost_count <<<"$lost"
mapfile -t rss <"$work/rss.txt"
first=$(( rss[1] / 1024 )); last=$(( rss[${#rss[@]}-1] / 1024 )); peak=$(( $(printf '%s\n' "${rss[@]}" | sort -n | tail -1) / 1024 ))
echo "{\"created\":$created,\"lost_writes\":$lost_count,\"rss_mb_after_warmup\":$first,\"rss_mb_end\":$last,\"rss_mb_peak\":$peak,\"rss_samples_mb\":[$(printf '%s\n' "${rss[@]}" | awk '{printf "%s%d", (NR>1 ? "," : ""), $1/1024}')]}" | tee -a "$out"
server_errors=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["server_errors"])' "$summary")
[ "$server_errors" -eq 0 ] && [ "$lost_count" -eq 0 ] || { echo "soak failed" >&2; exit 1; }
echo "soak passed"
