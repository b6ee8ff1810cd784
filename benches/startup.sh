#!/usr/bin/env bash
# Start-up time on a seeded SQLite file: process start to the first `/health/ready` = 200,
# five times. Uses target/bench-data/users_USERS.db (benches/seed_large.sh USERS makes it).
# With STARTUP_COLD=1 (root only) the page cache is dropped before each start: a cold file.
#   benches/startup.sh [USERS]
# Writes benches/results/startup-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-1000000}"
db="target/bench-data/users_$users.db"
[ -f "$db" ] || { echo "$db missing: run benches/seed_large.sh $users" >&2; exit 1; }
cargo build --release -q
mkdir -p benches/results
out="benches/results/startup-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"commit\":\"$(git describe --always --dirty)\",\"users\":$users,\"cold\":${STARTUP_COLD:-0},\"file_bytes\":$(stat -c %s "$db"),\"command\":\"benches/startup.sh $users\"}" | tee "$out"
for run in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if [ "${STARTUP_COLD:-0}" = 1 ]; then sync; echo 1 >/proc/sys/vm/drop_caches; fi
    start=$(date +%s%N)
    DATABASE_URL="sqlite://$PWD/$db" BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn ./target/release/roster serve >/dev/null 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; exit 1; }
        sleep 0.005
    done
    ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "{\"run\":$run,\"ready_ms\":$ready_ms}" | tee -a "$out"
done
echo "results: $out"
