#!/usr/bin/env bash
# `roster seed` at a large size on SQLite, timed from outside, into the database the
# store-level criterion benches reuse (target/bench-data/users_N.db), so
#   benches/seed_large.sh 10000000
#   BENCH_SIZES=10000000 cargo bench --bench store -- sqlite/reads
# give the seeding time and the store-level figures at ten million users over one file.
# Writes benches/results/seed-<date>.jsonl: wall time, the seed's own summary, peak RSS,
# and the database's size. `benches/seed_large.sh USERS postgres` seeds a scratch
# PostgreSQL database instead (dropped afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-10000000}"
backend="${2:-sqlite}"
mkdir -p benches/results
out="benches/results/seed-$(date -u +%Y%m%d-%H%M%S).jsonl"
log="$(mktemp)"
if [ "$backend" = postgres ]; then
    # A scratch database on the server of BENCH_POSTGRES_URL (or TEST_POSTGRES_URL), dropped after.
    cargo build --release -q --features postgres
    server="${BENCH_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
    name=roster_bench_seed
    psql "$server" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name"
    trap 'rm -f "$log"; psql "$server" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)"' EXIT
    url="${server%/*}/$name"
    db=""
else
    cargo build --release -q
    dir=target/bench-data
    mkdir -p "$dir"
    db="$dir/users_$users.db"
    rm -f "$db" "$db-wal" "$db-shm" "$db.lock"
    trap 'rm -f "$log"' EXIT
    url="sqlite://$PWD/$db"
fi
/usr/bin/time -v env DATABASE_URL="$url" ./target/release/roster seed --users "$users" >"$log" 2>&1
if [ "$backend" = postgres ]; then
    db_bytes=$(psql "$url" -Atc "SELECT pg_database_size(current_database())")
else
    db_bytes=$(stat -c %s "$db")
fi
summary=$(grep '^Seeded' "$log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.1f", u + s}' "$log")
python3 - "$out" "$users" "$summary" "$wall" "$peak_kb" "$cpu" "$backend" "$db_bytes" <<'PY'
import json, os, subprocess, sys
out, users, summary, wall, peak_kb, cpu, backend, db_bytes = sys.argv[1:]
model = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
line = {
    'machine': f'{os.cpu_count()} cores, {model}',
    'commit': subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True, text=True).stdout.strip(),
    'command': f'benches/seed_large.sh {users} {backend}',
    'backend': backend,
    'users': int(users),
    'summary': summary,
    'seconds': float(summary.split(' in ')[1].split(' s')[0]),
    'wall_clock': wall,
    'cpu_seconds': float(cpu),
    'peak_rss_mb': int(peak_kb) // 1024,
    'database_bytes': int(db_bytes),
}
print(json.dumps(line))
open(out, 'a').write(json.dumps(line) + '\n')
PY
echo "results: $out"
