#!/usr/bin/env bash
# The cached read paths on SQLite and on PostgreSQL (one instance, and two instances over one
# database behind a client that spreads its connections), in one run, so the figures are
# comparable: the PostgreSQL read barrier's cost is the gap between the two backends. The
# mixed scenario (writes included) runs after the reads on each backend.
#   benches/coherence.sh [USERS] [SECONDS]
# Writes benches/results/coherence-<date>.jsonl (one JSON line per scenario, plus machine facts).
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"
seconds="${2:-10}"
pg_server="${BENCH_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release -q --features postgres
bin="$PWD/target/release/roster"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export LUA_DIR="$PWD/benches/load" MAX_ID="$users"
mkdir -p benches/results
out="benches/results/coherence-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)\",\"commit\":\"$(git rev-parse --short HEAD)\",\"postgres\":\"$(psql "$pg_server" -Atc 'SHOW server_version')\",\"users\":$users,\"seconds\":$seconds,\"command\":\"benches/coherence.sh $users $seconds\"}" | tee "$out"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # DATABASE_URL → sets $base of a new server (default configuration, no rate limits)
    local port; port=$(free_port)
    base="http://127.0.0.1:$port"
    DATABASE_URL="$1" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
        JWT_SECRET=bench-secret-bench-secret-bench-secret \
        FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        "$bin" serve >"$work/log-$port" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -fs "$base/health/ready" >/dev/null && return; sleep 0.1; done
    echo "server on $1 did not start" >&2; cat "$work/log-$port" >&2; exit 1
}
login() {
    curl -fs -X POST "$1/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
warm() { # base: fill the caches the scenarios read
    curl -fs -H "Authorization: Bearer $ROSTER_TOKEN" "$1/api/v1/dashboard/stats" >/dev/null
    for id in $(seq 1 1000); do echo "url = \"$1/api/v1/users/$id\""; done >"$work/urls"
    curl -fs -K "$work/urls" -H "Authorization: Bearer $ROSTER_TOKEN" >/dev/null
}
scenario() { # label name conns target... (several targets: connections split among them)
    local label="$1" name="$2" conns="$3"; shift 3
    local n=$#; local each=$((conns / n)); local i=0; local loads=()
    for target in "$@"; do
        local script=benches/load/simple.lua url="$target"
        if [[ "$name" == user_by_id ]]; then script=benches/load/user_by_id.lua; fi
        if [[ "$name" == mixed ]]; then script=benches/load/mixed.lua; fi
        SCENARIO="$label/$name" wrk -t$((n == 1 ? 2 : 1)) -c"$each" -d"${seconds}s" -s "$script" "$url" \
            | grep '^{' >"$work/part-$i" &
        loads+=($!)
        i=$((i + 1))
    done
    for l in "${loads[@]}"; do wait "$l"; done
    python3 - "$label/$name" "$n" "$work"/part-* <<'PY' | tee -a "$out"
import json, sys
label, n, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
parts = [json.loads(open(f).read()) for f in files]
print(json.dumps({"scenario": label, "instances": n, "rps": round(sum(p["rps"] for p in parts)),
    "p50_ms": max(p["p50_ms"] for p in parts), "p99_ms": max(p["p99_ms"] for p in parts),
    "errors": sum(p["errors"] for p in parts), "non_2xx": sum(p["non_2xx"] for p in parts)}))
PY
    rm -f "$work"/part-*
}
run_all() { # label base...
    local label="$1"; shift
    scenario "$label" dashboard_cached 64 $(for b in "$@"; do echo "$b/api/v1/dashboard/stats"; done)
    scenario "$label" user_by_id 64 "$@"
    scenario "$label" list_page 64 $(for b in "$@"; do echo "$b/api/v1/users?is_active=true&size=50"; done)
}

# SQLite
sqlite_url="sqlite://$work/bench.db"
DATABASE_URL="$sqlite_url" "$bin" seed --users "$users" >/dev/null
start "$sqlite_url"; a="$base"
ROSTER_TOKEN=$(login "$a"); export ROSTER_TOKEN
warm "$a"
run_all sqlite "$a"
scenario sqlite mixed 100 "$a"   # scenario (c) of run_load.sh, writes included: it changes users
stop_all

# PostgreSQL: a fresh database, seeded the same way, then vacuumed and checkpointed so the
# first scenarios do not share the machine with autovacuum and the seed's checkpoint
db=roster_bench_coherence
psql "$pg_server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg_url="${pg_server%/*}/$db"
DATABASE_URL="$pg_url" "$bin" seed --users "$users" >/dev/null
psql "$pg_url" -qc "VACUUM ANALYZE" -c "CHECKPOINT"
start "$pg_url"; a="$base"
ROSTER_TOKEN=$(login "$a"); export ROSTER_TOKEN
warm "$a"
run_all postgres_1 "$a"
start "$pg_url"; b="$base"
warm "$b"
run_all postgres_2 "$a" "$b"
# Writes last: they leave PostgreSQL with autovacuum work that would slow the reads after.
scenario postgres_1 mixed 100 "$a"
scenario postgres_2 mixed 100 "$a" "$b"
stop_all
psql "$pg_server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
echo "results: $out"
