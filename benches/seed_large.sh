#!/usr/bin/env bash
# `roster seed` at a large size on SQLite, timed from outside, into the database the
# store-level criterion benches reuse (target/bench-data/users_N.db), so
#   benches/seed_large.sh 10000000
#   BENCH_SIZES=10000000 cargo bench --bench store -- sqlite/reads
# give the seeding time and the store-level figures at ten million users over one file.
# Writes benches/results/seed-<date>.jsonl: wall time, the seed's own summary, peak RSS,
# and the file's size.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-10000000}"
cargo build --release -q
dir=target/bench-data
mkdir -p "$dir" benches/results
db="$dir/users_$users.db"
rm -f "$db" "$db-wal" "$db-shm" "$db.lock"
out="benches/results/seed-$(date -u +%Y%m%d-%H%M%S).jsonl"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
/usr/bin/time -v env DATABASE_URL="sqlite://$PWD/$db" ./target/release/roster seed --users "$users" >"$log" 2>&1
summary=$(grep '^Seeded' "$log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.1f", u + s}' "$log")
python3 - "$out" "$users" "$summary" "$wall" "$peak_kb" "$cpu" "$db" <<'PY'
import json, os, subprocess, sys
out, users, summary, wall, peak_kb, cpu, db = sys.argv[1:]
model = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0
line = {
    'machine': f'{os.cpu_count()} cores, {model}',
    'commit': subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True, text=True).stdout.strip(),
    'command': f'benches/seed_large.sh {users}',
    'users': int(users),
    'summary': summary,
    'seconds': float(summary.split(' in ')[1].split(' s')[0]),
    'wall_clock': wall,
    'cpu_seconds': float(cpu),
    'peak_rss_mb': int(peak_kb) // 1024,
    'file_bytes': size(db),
    'wal_bytes': size(db + '-wal'),
}
print(json.dumps(line))
open(out, 'a').write(json.dumps(line) + '\n')
PY
echo "results: $out"
