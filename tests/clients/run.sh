#!/usr/bin/env bash
# Clients generated from the committed spec, as Roster's users make them:
#  - a Python client with openapi-python-client (fails on any warning, e.g. a skipped
#    operation), driven against a live server by smoke.py;
#  - TypeScript types with openapi-typescript, type-checked with `tsc --strict` (check.ts).
# Generator versions are pinned here and in package.json / package-lock.json.
#   tests/clients/run.sh        (needs ./target/debug/roster, e.g. after `cargo test`)
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
spec="$root/openapi/openapi.json"
python_generator="openapi-python-client==0.29.1"
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work" roster.ts; }
trap cleanup EXIT

python3 -m pip show openapi-python-client 2>/dev/null | grep -q '^Version: 0.29.1$' \
    || python3 -m pip install -q "$python_generator"
npm ci --no-audit --no-fund --silent

echo "== Python client (openapi-python-client 0.29.1)"
openapi-python-client generate --path "$spec" --output-path "$work/roster_client" --meta none \
    >"$work/generate.log" 2>&1 || { cat "$work/generate.log"; exit 1; }
if grep -qiE 'warning|will not be generated|error' "$work/generate.log"; then
    cat "$work/generate.log" >&2
    echo "the generator skipped or doubted part of the spec" >&2
    exit 1
fi

echo "== TypeScript types (openapi-typescript 7.13.0, tsc --strict)"
npx openapi-typescript "$spec" -o roster.ts >/dev/null
npx tsc --strict --noEmit check.ts

echo "== the generated Python client against a live server"
bin="$root/target/debug/roster"
[ -x "$bin" ] || (cd "$root" && cargo build -q)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATABASE_URL="sqlite://$work/clients.db" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
    ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 \
    FIRST_SUPERUSER_EMAIL=root@example.com FIRST_SUPERUSER_PASSWORD=root-password-1 \
    "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.2; done
PYTHONPATH="$work" python3 smoke.py "http://127.0.0.1:$port" root@example.com root-password-1
