#!/usr/bin/env bash
# Soak: SECONDS of mixed traffic at 100 connections with ~1% malformed requests against the
# release binary on SQLite. Passes when there is no 5xx, every created user is readable
# afterwards, and memory is flat after warm-up.  benches/soak.sh [SECONDS] [USERS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
users="${2:-10000}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export DATABASE_URL="sqlite://$work/soak.db"
./target/release/roster seed --users "$users" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
    FIRST_SUPERUSER_EMAIL=soak@example.com FIRST_SUPERUSER_PASSWORD=soak-password-1 \
    ./target/release/roster serve >"$work/access.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.1; done
export ROSTER_TOKEN
ROSTER_TOKEN=$(curl -fs -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"soak@example.com","password":"soak-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
export LUA_DIR="$PWD/benches/load" MAX_ID=$((users + 1)) CREATED_IDS="$work/created.txt"

( for _ in $(seq 1 $((seconds / 5))); do sleep 5; ps -o rss= -p "$pid" | tr -d ' '; done ) >"$work/rss.txt" &
sampler=$!
summary=$(wrk -t2 -c100 -d"${seconds}s" --timeout 10s -s benches/load/soak.lua "$base" | grep '^{')
wait "$sampler" || true
echo "$summary"

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
echo "{\"created\":$created,\"lost_writes\":$lost_count,\"rss_mb_after_warmup\":$first,\"rss_mb_end\":$last,\"rss_mb_peak\":$peak,\"rss_samples_mb\":[$(printf '%s\n' "${rss[@]}" | awk '{printf "%s%d", (NR>1 ? "," : ""), $1/1024}')]}"
server_errors=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["server_errors"])' "$summary")
[ "$server_errors" -eq 0 ] && [ "$lost_count" -eq 0 ] || { echo "soak failed" >&2; exit 1; }
echo "soak passed"
