#!/usr/bin/env bash
# Saturated mixed (c) for one binary: seeds 100k users, starts the server as run_load.sh does,
# and runs the mix twice for 10 s. For an A/B of the write tail, alternate binaries:
#   for b in OLD NEW OLD NEW; do benches/mixed_ab.sh "$b"; done
set -euo pipefail
cd "$(dirname "$0")/.."
ROSTER_BIN="${1:?binary}"
. benches/lib.sh
start_seeded_server 100000
wrk -t2 -c100 -d3s "$base/health/live" >/dev/null
for _ in 1 2; do SCENARIO=c_mixed wrk -t2 -c100 -d10s -s benches/load/mixed.lua "$base" | grep '^{'; done
