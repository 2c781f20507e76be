#!/usr/bin/env bash
# `make image`: build the decbyzpg image offline.
#
#  1. the base image decbyzpg-base:bookworm from Debian packages (docker/base-image.sh);
#  2. a wheelhouse of every dependency, made on this host with pip (which finds the CPU
#     torch wheel on local disk) and cached in $CACHE/wheels, rebuilt only when
#     pyproject.toml changes; the project's own wheel is rebuilt every time;
#  3. `docker build` with BASE=decbyzpg-base:bookworm and WHEELS=local: the containers
#     install from the wheelhouse with --no-index and never reach a package index.
#
# Environment: CACHE (default /var/cache/decbyzpg), IMAGE (default decbyzpg:latest),
# PYTHON (default .venv/bin/python, else python3.11), DOCKER (default docker).
# Prints the time of each step and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CACHE:-/var/cache/decbyzpg}
IMAGE=${IMAGE:-decbyzpg:latest}
if [[ -z "${DOCKER:-}" ]]; then
    # BuildKit is needed: a client without buildx (e.g. a newer CLI alone) cannot use it,
    # docker.io's client (20.10) can, through the engine's built-in BuildKit.
    DOCKER=docker
    if ! docker buildx version >/dev/null 2>&1 && [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; fi
fi
BASE_TAG=${BASE_TAG:-decbyzpg-base:bookworm}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3.11; fi
fi
export CACHE DOCKER BASE_TAG

t0=$SECONDS
docker/base-image.sh
t1=$SECONDS

wheels="$CACHE/wheels"
stamp="$wheels/.dependencies.sha256"
# keyed on the dependency list alone (other edits of pyproject.toml do not change the wheels)
want=$("$PYTHON" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(p["dependencies"])' \
       | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "wheelhouse: pip wheel of every dependency into $wheels ..."
    rm -rf "$wheels"; mkdir -p "$wheels"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" . 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    ls "$wheels"/torch-*.whl >/dev/null  # pip wheel's failures end here
    rm -f "$wheels"/decbyzpg-*.whl
    echo "$want" > "$stamp"
fi
# The build context sees the wheelhouse as .wheelhouse/deps (hard links: no copy on one
# file system) and .wheelhouse/project (this checkout's wheel).
rm -rf .wheelhouse; mkdir -p .wheelhouse/deps .wheelhouse/project
cp -l "$wheels"/*.whl .wheelhouse/deps/ 2>/dev/null || cp "$wheels"/*.whl .wheelhouse/deps/
# Built from a clean copy of the package sources (the files .dockerignore lets through):
# an in-tree build would reuse ./build/lib, where modules deleted or moved since stay.
# Fixed timestamps: the same sources give the same wheel bytes, so the build cache holds.
src=$(mktemp -d)
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md peer adversary proto | tar -x -C "$src"
SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir .wheelhouse/project "$src" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
rm -rf "$src"
ls .wheelhouse/project/decbyzpg-*.whl >/dev/null
t2=$SECONDS

DOCKER_BUILDKIT=1 $DOCKER build --build-arg BASE="$BASE_TAG" --build-arg WHEELS=local -t "$IMAGE" . ${BUILD_ARGS:-}
t3=$SECONDS
rm -rf .wheelhouse

size() { $DOCKER image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
echo "image $IMAGE: $(size "$IMAGE") (base $BASE_TAG: $(size "$BASE_TAG"))"
echo "timings: base $((t1 - t0)) s, wheelhouse $((t2 - t1)) s, docker build $((t3 - t2)) s, total $((t3 - t0)) s"
