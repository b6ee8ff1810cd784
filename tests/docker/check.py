"""Checks a running Roster container: non-root, healthy by its HEALTHCHECK, data kept on
its volume across a restart, and exit 0 on SIGTERM.

    python3 tests/docker/check.py CONTAINER
"""

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def inspect(name, template):
    return docker("inspect", "-f", template, name).strip()


def wait_healthy(name):
    deadline = time.time() + 60
    while time.time() < deadline:
        if inspect(name, "{{.State.Health.Status}}") == "healthy":
            return
        time.sleep(0.5)
    sys.exit(f"not healthy: {docker('logs', name)[-2000:]}")


def wait_answering(base):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    sys.exit(f"{base} does not answer")


def call(method, url, body=None, token=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def main(name):
    wait_healthy(name)
    pid = inspect(name, "{{.State.Pid}}")
    uid = re.search(r"^Uid:\s+(\d+)", open(f"/proc/{pid}/status").read(), re.M).group(1)
    assert uid == "65532", f"runs as uid {uid}, not the nonroot user"
    print("runs as uid 65532 (nonroot); healthy through its HEALTHCHECK")

    port = docker("port", name, "8000/tcp").split(":")[-1].strip()
    base = f"http://127.0.0.1:{port}"
    wait_answering(base)
    logs = docker("logs", name)
    password = re.search(r"password:\s+(\S+)", logs).group(1)
    status, tokens = call("POST", f"{base}/api/v1/auth/login", {"email": "admin@example.com", "password": password})
    assert status == 200, (status, tokens)
    status, user = call("POST", f"{base}/api/v1/users",
                        {"email": "kept@example.com", "password": "user-password-1"}, tokens["access_token"])
    assert status == 201, (status, user)

    started = inspect(name, "{{.State.StartedAt}}")
    docker("restart", name)
    deadline = time.time() + 60
    while inspect(name, "{{.State.StartedAt}}") == started and time.time() < deadline:
        time.sleep(0.2)
    port = docker("port", name, "8000/tcp").split(":")[-1].strip()
    base = f"http://127.0.0.1:{port}"
    wait_answering(base)
    wait_healthy(name)
    status, tokens = call("POST", f"{base}/api/v1/auth/login", {"email": "admin@example.com", "password": password})
    assert status == 200, (status, tokens)
    status, again = call("GET", f"{base}/api/v1/users/{user['id']}", token=tokens["access_token"])
    assert status == 200 and again["email"] == "kept@example.com", (status, again)
    print("data kept on the volume across a restart")

    docker("stop", "--time", "20", name)
    code = inspect(name, "{{.State.ExitCode}}")
    assert code == "0", f"exit code {code} after SIGTERM"
    assert "roster stopped" in docker("logs", name), "no graceful stop in the log"
    print("SIGTERM: graceful stop, exit 0")


if __name__ == "__main__":
    main(sys.argv[1])
