"""Makes traffic on a Roster, then asks the Prometheus scraping it for every series the
Grafana dashboard uses, and for the alerting rules' state.

    python3 tests/monitoring/check.py ROSTER_URL PROMETHEUS_URL DASHBOARD_JSON
"""

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def traffic(roster):
    status, body = call("POST", f"{roster}/api/v1/auth/login",
                        {"email": "root@example.com", "password": "root-password-1"})
    assert status == 200, (status, body)
    token = json.loads(body)["access_token"]
    status, body = call("POST", f"{roster}/api/v1/users",
                        {"email": "watched@example.com", "password": "user-password-1"}, token)
    assert status == 201, (status, body)
    user = json.loads(body)["id"]
    for _ in range(3):  # a miss, then hits
        call("GET", f"{roster}/api/v1/users/{user}", token=token)
        call("GET", f"{roster}/api/v1/dashboard/stats", token=token)
    call("GET", f"{roster}/api/v1/users/999999", token=token)  # a 404
    for _ in range(5):  # past LOGIN_RATE_LIMIT_PER_MINUTE=3: rate limited
        call("POST", f"{roster}/api/v1/auth/login", {"email": "x@example.com", "password": "wrong-one"})


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]["result"]


def wait(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError, KeyError):
            pass
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


def main(roster, prometheus, dashboard_path):
    traffic(roster)
    wait("Prometheus to scrape Roster", lambda: any(
        r["value"][1] == "1" for r in query(prometheus, 'up{job="roster"}')))
    dashboard = json.load(open(dashboard_path))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = sorted({m for e in exprs for m in re.findall(r"\b([a-z_]+_(?:total|bucket|status|messages|size|connections|entries))\b", e)})
    assert len(names) >= 10, names
    # Every series the dashboard uses exists after a scrape or two.
    for name in names:
        wait(f"series {name}", lambda: query(prometheus, f'count({{__name__="{name}", job="roster"}})'))
        print(f"series present: {name}")
    # And each panel's query evaluates (a typo would be an error, not an empty panel).
    for expr in exprs:
        ready = expr.replace("$__rate_interval", "1m")
        query(prometheus, ready)
    # The rules are loaded and evaluate without error.
    def rules_ok():
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
            groups = json.load(response)["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) >= 10 and all(r["health"] == "ok" for r in rules)
    wait("the alerting rules to evaluate", rules_ok)
    print(f"prometheus scraped roster: {len(names)} dashboard series present, rules evaluating")


if __name__ == "__main__":
    main(*sys.argv[1:4])
