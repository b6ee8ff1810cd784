#!/usr/bin/env bash
# The admin console in a real browser: Debian's Chromium driven by playwright-core (pinned in
# package.json / package-lock.json) through console.mjs. The newcomer's path: the first start
# on an empty database prints the superuser's credentials, which the browser signs in with;
# 5,000 seeded users give the pages something to show. Screenshots go to docs/screenshots/.
#   tests/browser/run.sh        (uses ./target/debug/roster; builds it when missing)
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
npm ci --no-audit --no-fund --silent
bin="$root/target/debug/roster"
[ -x "$bin" ] || (cd "$root" && cargo build -q)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$work/console.db" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
    ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1
serve() {
    "$bin" serve >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
    cat "$work/server.log" >&2; echo "roster did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }

serve
email=$(sed -n 's/^ *email: *//p' "$work/server.log" | head -n 1)
password=$(sed -n 's/^ *password: *//p' "$work/server.log" | head -n 1)
[ -n "$email" ] && [ -n "$password" ] || { cat "$work/server.log" >&2; echo "no printed credentials" >&2; exit 1; }
stop
"$bin" seed --users 5000 --days 45 >/dev/null
serve

mkdir -p "$root/docs/screenshots"
node console.mjs "http://127.0.0.1:$port" "$email" "$password" "$root/docs/screenshots"
