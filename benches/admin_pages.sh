#!/usr/bin/env bash
# Server-side time of every admin console page over a large SQLite database: the access
# log's duration_ms (time spent in Roster, without the client or the network), per page.
#   benches/admin_pages.sh [USERS] [REQUESTS_PER_PAGE]
# Writes benches/results/admin-pages-<date>.jsonl (machine facts, then one line per page).
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-1000000}"
n="${2:-50}"
cargo build --release -q
bin="$PWD/target/release/roster"
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p benches/results
out="benches/results/admin-pages-$(date -u +%Y%m%d-%H%M%S).jsonl"
echo "{\"machine\":\"$(nproc) cores, $(uname -r)\",\"users\":$users,\"requests_per_page\":$n,\"command\":\"benches/admin_pages.sh $users $n\"}" | tee "$out"

db="sqlite://$work/pages.db"
DATABASE_URL="$db" "$bin" seed --users "$users" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
DATABASE_URL="$db" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false LOG_FORMAT=json \
    FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
    "$bin" serve >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.1; done
curl -fs -o /dev/null -c "$work/jar" -X POST "$base/admin/login" \
    --data-urlencode email=bench@example.com --data-urlencode password=bench-password-1
# A cursor deep in the table: the next-page link of a page sorted by email.
next=$(curl -fs -b "$work/jar" "$base/admin/users?sort=email&size=25" \
    | python3 -c 'import re,sys,html; m=re.search(r"href=\"(/admin/users\?[^\"]*cursor=[^\"]*)\"", sys.stdin.read()); print(html.unescape(m.group(1)))')
middle=$((users / 2))

measure() { # label path [header]
    local label="$1" path="$2"; shift 2
    for _ in 1 2 3; do curl -fs -o /dev/null -b "$work/jar" "$@" "$base$path"; done
    local from; from=$(wc -l <"$work/log")
    for _ in $(seq 1 "$n"); do curl -fs -o /dev/null -b "$work/jar" "$@" "$base$path"; done
    sleep 0.3 # the log writer is a thread of its own
    tail -n +"$((from + 1))" "$work/log" | python3 -c '
import json, statistics, sys
label, path = sys.argv[1], sys.argv[2]
ms = []
for line in sys.stdin:
    try: event = json.loads(line)
    except ValueError: continue
    fields = event.get("fields", event)
    if fields.get("message") == "request" and "duration_ms" in fields:
        ms.append(float(fields["duration_ms"]))
ms.sort()
print(json.dumps({"page": label, "path": path, "requests": len(ms),
    "median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 3),
    "max_ms": round(ms[-1], 3)}))' "$label" "$path" | tee -a "$out"
}

measure dashboard "/admin"
measure users "/admin/users"
measure users_inactive_by_email "/admin/users?active=false&sort=email"
measure users_cursor_page "$next"
measure users_search_broad "/admin/users?search=ada" -H "hx-request: true" -H "hx-target: results"
measure users_search_broad_by_name "/admin/users?search=lee&sort=full_name" -H "hx-request: true" -H "hx-target: results"
measure users_search_narrow "/admin/users?search=ada.lee.4" -H "hx-request: true" -H "hx-target: results"
measure users_search_none "/admin/users?search=zzzz" -H "hx-request: true" -H "hx-target: results"
measure users_superusers_by_email "/admin/users?role=superuser&sort=email"
measure user "/admin/users/$middle"
measure audit "/admin/audit"
measure invite "/admin/invite"
measure import "/admin/import"
