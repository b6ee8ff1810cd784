#!/usr/bin/env bash
# The Docker image, really run. No public registry is reachable here, so the base image is
# made locally: the release binary's own shared libraries, /etc/passwd with the nonroot
# user (65532) and /data, imported with `docker import` — the same contents as the
# distroless base the published Dockerfile names. The image is then built from the
# published Dockerfile's runtime stage (its ENV, VOLUME, USER, HEALTHCHECK, ENTRYPOINT
# taken as they are) and checked: it runs as non-root, becomes healthy through its
# HEALTHCHECK, keeps its data on the volume across a restart, and exits 0 on SIGTERM.
#   tests/docker/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends docker.io; }
    (dockerd >/tmp/roster-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
fi

cargo build --release -q --features postgres
work="$(mktemp -d)"
name="roster-test-$$"
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm "$name-data" >/dev/null 2>&1 || true
    docker rmi "roster:$name" "roster-base:$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== base image: the binary's libraries and a nonroot user (like distroless/cc)"
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for lib in $(ldd target/release/roster | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
tar -C "$rootfs" --numeric-owner -cf "$work/base.tar" .
docker import "$work/base.tar" "roster-base:$name" >/dev/null

echo "== image: the published Dockerfile's runtime stage on that base"
mkdir -p "$work/ctx/data"
cp target/release/roster "$work/ctx/roster"
{
    echo "FROM roster-base:$name"
    sed -n '/^FROM gcr.io\/distroless/,$p' Dockerfile | tail -n +2 \
        | sed -e 's|^COPY --from=builder /build/target/release/roster |COPY roster |' \
              -e 's|^COPY --from=builder --chown=65532:65532 /data /data|COPY --chown=65532:65532 data /data|'
} >"$work/ctx/Dockerfile"
grep -q '^HEALTHCHECK' "$work/ctx/Dockerfile" && grep -q '^USER nonroot' "$work/ctx/Dockerfile"
docker build -q -t "roster:$name" "$work/ctx" >/dev/null

echo "== run"
docker run -d --name "$name" -p 127.0.0.1::8000 -v "$name-data:/data" \
    --health-interval 1s --health-start-period 1s "roster:$name" >/dev/null
python3 tests/docker/check.py "$name"
