#!/usr/bin/env bash
# The monitoring kit against the real things: promtool checks deploy/prometheus's rules,
# then a real Prometheus scrapes a real Roster (1 s interval) and its HTTP API must hold
# every series the Grafana dashboard queries, with the rules loaded and evaluating.
#   tests/monitoring/run.sh      (needs ./target/debug/roster and Debian's prometheus)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v promtool >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }
rules="$PWD/deploy/prometheus/roster-rules.yml"
dashboard="$PWD/deploy/grafana/roster-dashboard.json"
promtool check rules "$rules"

bin="$PWD/target/debug/roster"
[ -x "$bin" ] || cargo build -q
work="$(mktemp -d)"; roster_pid=""; prom_pid=""
cleanup() {
    [ -n "$roster_pid" ] && kill "$roster_pid" 2>/dev/null || true
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port)
DATABASE_URL="sqlite://$work/monitored.db" BIND_ADDR="127.0.0.1:$port" \
    ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 LOGIN_RATE_LIMIT_PER_MINUTE=3 \
    FIRST_SUPERUSER_EMAIL=root@example.com FIRST_SUPERUSER_PASSWORD=root-password-1 \
    "$bin" serve >"$work/roster.log" 2>&1 &
roster_pid=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.2; done

prom_port=$(free_port)
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$rules"]
scrape_configs:
  - job_name: roster
    static_configs: [{targets: ["127.0.0.1:$port"]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

python3 tests/monitoring/check.py "http://127.0.0.1:$port" "http://127.0.0.1:$prom_port" "$dashboard" \
    || { echo "--- prometheus log"; tail -20 "$work/prometheus.log"; exit 1; }
