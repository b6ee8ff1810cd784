#!/usr/bin/env bash
# A login flood beside the cached-read scenario (issue 14): the cached dashboard's rate and
# p99 alone and with 64 connections of wrong logins running at the same time, and the
# server's peak memory. SQLite, 100k users, default configuration (rate limits off: one
# load generator is one client address).
#   benches/login_flood.sh [USERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"; seconds="${2:-15}"
. benches/lib.sh
start_seeded_server "$users"
out="benches/results/login-flood-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores\",\"command\":\"benches/login_flood.sh $users $seconds\"}" | tee "$out"
rss() { awk '/^RssAnon|^VmRSS/ {printf "\"%s\":%d,", $1, $2/1024}' "/proc/$pid/status" | sed 's/:",/":/g; s/,$//'; }
peak=0
sample() { while kill -0 "$pid" 2>/dev/null; do
    kb=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${kb:-0}" -gt "$peak" ] && peak=$kb && echo "$peak" >"$work/peak"
    sleep 0.2; done; }
sample & sampler=$!
curl -fs -H "Authorization: Bearer $ROSTER_TOKEN" "$base/api/v1/dashboard/stats" >/dev/null
echo "{\"before\":{$(rss)}}" | tee -a "$out"
SCENARIO="dashboard_alone" wrk -t1 -c32 -d"${seconds}s" -s benches/load/simple.lua "$base/api/v1/dashboard/stats" | grep '^{' | tee -a "$out"
SCENARIO="login_flood" wrk -t1 -c64 -d"$((seconds + 4))s" -s benches/load/login_flood.lua "$base" | grep '^{' >"$work/flood" &
flood=$!
sleep 2
SCENARIO="dashboard_during_flood" wrk -t1 -c32 -d"${seconds}s" -s benches/load/simple.lua "$base/api/v1/dashboard/stats" | grep '^{' | tee -a "$out"
wait "$flood"; tee -a "$out" <"$work/flood"
codes=$(grep -c '"level":"WARN"' "$work/access.log" || true)
kill "$sampler" 2>/dev/null || true
echo "{\"after\":{$(rss)},\"peak_rss_anon_mb\":$(( $(cat "$work/peak" 2>/dev/null || echo 0) / 1024 ))}" | tee -a "$out"
echo "results: $out"
