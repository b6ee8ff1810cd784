#!/usr/bin/env bash
# Login sizing: right-password logins per second at the default argon2 cost (19 MiB, 2
# passes), with the hashing gate at 1 and at 2 (this machine's cores) concurrent checks,
# 8 connections (within HASH_QUEUE_MAX, so none is refused). SQLite, default configuration,
# rate limits off. "One core serves N logins/s" is the HASH_CONCURRENCY=1 figure.
#   benches/login_sizing.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
. benches/lib.sh
mkdir -p benches/results
out="benches/results/login-sizing-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"commit\":\"$(git rev-parse --short HEAD)\",\"command\":\"benches/login_sizing.sh $seconds\"}" | tee "$out"
for gate in 1 2; do
    HASH_CONCURRENCY=$gate start_seeded_server 1000
    SCENARIO="logins_hash_concurrency_$gate" wrk -t1 -c8 -d"${seconds}s" -s benches/load/login_ok.lua "$base" \
        | grep '^{' | tee -a "$out"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    rm -f "$work/bench.db"*
done
echo "results: $out"
