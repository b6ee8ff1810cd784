#!/usr/bin/env bash
# Whether a password-reset request tells, by its timing, if an address has an account:
# known and unknown addresses alternately, on one keep-alive connection, on SQLite and
# (when TEST_POSTGRES_URL is set) PostgreSQL. Prints medians and 90th percentiles.
#   benches/reset_timing.sh [REQUESTS_PER_KIND]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-500}"
cargo build --release -q --all-features
bin="$PWD/target/release/roster"
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
out="benches/results/reset-timing-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores\",\"command\":\"benches/reset_timing.sh $*\"}" | tee "$out"
run_one() { # backend database_url
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    DATABASE_URL="$2" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
        FIRST_SUPERUSER_EMAIL=known@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        RUST_LOG=warn "$bin" serve >"$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
    python3 - "$port" "$n" "$1" <<'PY' | tee -a "$out"
import http.client, json, statistics, sys, time
port, n, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port)
def one(email):
    body = json.dumps({"email": email})
    start = time.perf_counter()
    conn.request("POST", "/api/v1/auth/password-reset", body, {"content-type": "application/json"})
    r = conn.getresponse(); r.read()
    assert r.status == 202, r.status
    return (time.perf_counter() - start) * 1000
for _ in range(50):  # warm-up
    one("known@example.com"); one("nobody@example.com")
known, unknown = [], []
for i in range(n):
    known.append(one("known@example.com"))
    unknown.append(one(f"nobody{i}@example.com"))
def q(xs, p): return sorted(xs)[int(len(xs) * p) - 1]
print(json.dumps({"backend": backend, "requests_per_kind": n,
    "known_median_ms": round(statistics.median(known), 3), "unknown_median_ms": round(statistics.median(unknown), 3),
    "known_p90_ms": round(q(known, .9), 3), "unknown_p90_ms": round(q(unknown, .9), 3),
    "median_ratio": round(statistics.median(known) / statistics.median(unknown), 3)}))
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
run_one sqlite "sqlite://$work/reset.db"
if [ -n "${TEST_POSTGRES_URL:-}" ]; then
    db="roster_reset_bench_$$"
    psql "$TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    run_one postgres "${TEST_POSTGRES_URL%/*}/$db"
    psql "$TEST_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
fi
echo "results: $out"
