# Shared by the load scripts: seed a SQLite database, start the release binary on a free
# port with a superuser, and log in. Sets: work, pid, base, ROSTER_TOKEN, LUA_DIR, MAX_ID.
# Cleans up on exit.   start_seeded_server USERS   (or start_server DATABASE_URL)
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
# ROSTER_BIN runs another build (an A/B against an older commit); default: this checkout's.
if [ -z "${ROSTER_BIN:-}" ]; then cargo build --release -q; ROSTER_BIN="$PWD/target/release/roster"; fi

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Starts the binary on DATABASE_URL $1, a free port, default configuration with a superuser,
# and logs in. Sets pid, base, ROSTER_TOKEN; the server's output goes to $work/access.log.
start_server() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    base="http://127.0.0.1:$port"
    # Default configuration, but one load generator is one client IP: per-IP limits would
    # measure the limiter, not the service.
    DATABASE_URL="$1" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT_ENABLED=false \
        FIRST_SUPERUSER_EMAIL=bench@example.com FIRST_SUPERUSER_PASSWORD=bench-password-1 \
        "$ROSTER_BIN" serve >"$work/access.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do curl -fs "$base/health/ready" >/dev/null && break; sleep 0.1; done
    ROSTER_TOKEN=$(curl -fs -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    export ROSTER_TOKEN
}

start_seeded_server() {
    local users="$1"
    export DATABASE_URL="sqlite://$work/bench.db"
    "$ROSTER_BIN" seed --users "$users" >/dev/null
    start_server "$DATABASE_URL"
    # Seeded users are ids 1..USERS; the superuser the scenarios log in as comes after
    # them, so no scenario deactivates or renames it.
    export LUA_DIR="$PWD/benches/load" MAX_ID="$users"
}

# Memory of process $pid: anonymous (heap, stacks: what the 100 MB target is about) and
# file-backed (pages of the memory-mapped database, reclaimable page cache), now and at the
# peak the sampler saw. JSON fields for a result line.
memory_sampler() { # runs in the background: keeps the highest RssAnon seen in $work/anon-peak
    echo 0 >"$work/anon-peak"
    while kill -0 "$pid" 2>/dev/null && [ -f "$work/anon-peak" ]; do
        local anon; anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        if [ "${anon:-0}" -gt "$(cat "$work/anon-peak" 2>/dev/null || echo 0)" ]; then echo "$anon" >"$work/anon-peak"; fi
        sleep 0.2
    done
}
memory_json() {
    local status="/proc/$pid/status"
    echo "\"rss_anon_mb\":$(( $(awk '/^RssAnon/ {print $2}' "$status") / 1024 )),\"rss_file_mb\":$(( $(awk '/^RssFile/ {print $2}' "$status") / 1024 )),\"peak_rss_anon_mb\":$(( $(cat "$work/anon-peak") / 1024 )),\"peak_rss_mb\":$(( $(awk '/^VmHWM/ {print $2}' "$status") / 1024 ))"
}
