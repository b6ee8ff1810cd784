#!/usr/bin/env bash
# What one user write costs inside SQLite, by what it touches: the FTS5 trigram index (a
# change of full_name or email), the dashboard-counter trigger (is_active), or neither;
# one write per transaction and 16 per transaction (what group commit does under load).
# Python's sqlite3 over a file seeded by `roster seed`: the SQL and triggers are Roster's,
# the SQLite library is the system's (its version is recorded).
#   benches/write_cost.sh [USERS]
# Writes benches/results/write-cost-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-100000}"
cargo build --release -q
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
DATABASE_URL="sqlite://$work/bench.db" ./target/release/roster seed --users "$users" >/dev/null
mkdir -p benches/results
out="benches/results/write-cost-$(date -u +%Y%m%d-%H%M%S).jsonl"
python3 - "$work/bench.db" "$users" <<'PY' | tee "$out"
import json, random, sqlite3, sys, time
path, users = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA journal_mode = WAL")
c.execute("PRAGMA synchronous = NORMAL")
c.execute("PRAGMA cache_size = -16384")  # the writer's, as in src/store/sqlite.rs
print(json.dumps({"machine": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip("\t: "),
                  "sqlite": sqlite3.sqlite_version, "users": users,
                  "command": f"benches/write_cost.sh {users}"}))
def cost(sql, args, per_tx, n=3000):
    start = time.perf_counter()
    for i in range(0, n, per_tx):
        c.execute("BEGIN IMMEDIATE")
        for j in range(per_tx):
            c.execute(sql, args(i + j))
        c.execute("COMMIT")
    return (time.perf_counter() - start) / n * 1e6
some = lambda: random.randint(1, users)
writes = {
    "full_name (FTS5 trigram delete + insert)":
        ("UPDATE users SET full_name = ?, updated_at = ? WHERE id = ?", lambda i: (f"Load {i} name", i, some())),
    "is_active (counter trigger, is_active indexes)":
        ("UPDATE users SET is_active = 1 - is_active, updated_at = ? WHERE id = ?", lambda i: (i, some())),
    "updated_at only (no trigger, no indexed column)":
        ("UPDATE users SET updated_at = ? WHERE id = ?", lambda i: (i, some())),
}
for per_tx in (1, 16):
    for name, (sql, args) in writes.items():
        for _ in range(2):  # warm, then measure
            us = cost(sql, args, per_tx)
        print(json.dumps({"write": name, "per_transaction": per_tx, "us_per_write": round(us, 1)}))
PY
echo "results: $out"
