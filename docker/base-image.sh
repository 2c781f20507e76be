#!/usr/bin/env bash
# Build the local base image decbyzpg-base:bookworm from Debian packages alone (no image
# registry needed): debootstrap a minimal bookworm with python3 + python3-venv, trim it,
# and `docker import` it.  The trimmed root filesystem is kept as a tarball in the cache,
# so a wiped Docker engine re-imports it in seconds instead of bootstrapping again.
#
#   docker/base-image.sh            # no-op when the image already exists
#   FORCE=1 docker/base-image.sh    # bootstrap again
#
# Environment: CACHE (default /var/cache/decbyzpg), DOCKER (default: the client on PATH),
# DEBIAN_MIRROR (default: debootstrap's own), BASE_TAG (default decbyzpg-base:bookworm).
set -euo pipefail

CACHE=${CACHE:-/var/cache/decbyzpg}
DOCKER=${DOCKER:-docker}
BASE_TAG=${BASE_TAG:-decbyzpg-base:bookworm}
TARBALL="$CACHE/base-bookworm.tar"

if [[ -z "${FORCE:-}" ]] && $DOCKER image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "base image $BASE_TAG present"
    exit 0
fi
mkdir -p "$CACHE"
if [[ -n "${FORCE:-}" || ! -s "$TARBALL" ]]; then
    command -v debootstrap >/dev/null || { echo "error: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
    [[ $(id -u) == 0 ]] || { echo "error: debootstrap needs root" >&2; exit 1; }
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    started=$SECONDS
    echo "debootstrap bookworm (minbase + python3, python3-venv) into $root ..."
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" ${DEBIAN_MIRROR:-} \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    echo "debootstrap took $((SECONDS - started)) s"
    # Trim what a container never uses: package lists and caches, docs, man pages, locales
    # (C.UTF-8 is built into glibc), and Python's own test suite, IDLE and tkinter.  The
    # standard library's byte code stays: the container user cannot write it, so without
    # it every start would compile the standard library again.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
           "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
           "$root"/usr/share/locale/* "$root"/usr/share/i18n/* "$root"/usr/share/lintian \
           "$root"/usr/lib/python3.11/test "$root"/usr/lib/python3.11/idlelib "$root"/usr/lib/python3.11/tkinter \
           "$root"/tmp/* "$root"/root/.cache
    # a machine-id and resolv.conf are per container; docker supplies them
    : > "$root"/etc/machine-id
    rm -f "$root"/etc/resolv.conf "$root"/etc/hostname
    tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"; trap - EXIT
fi
$DOCKER import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' "$TARBALL" "$BASE_TAG" >/dev/null
echo "imported $BASE_TAG ($($DOCKER image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
