# One image for every peer of a DecByzPG run, honest or Byzantine: the entrypoint is the
# `decbyzpg` command, so `docker run IMAGE peer ...` and `docker run IMAGE adversary ...`.
#
# Two ways to build it (docs/DEPLOY.md):
#   docker build -t decbyzpg .                    # from python:3.11-slim and PyPI
#   make image                                    # offline: a base image made from Debian
#                                                 # packages and a wheelhouse made on the host
# `make image` runs, in effect:
#   DOCKER_BUILDKIT=1 docker build --build-arg BASE=decbyzpg-base:bookworm --build-arg WHEELS=local -t decbyzpg .
# BuildKit is required for WHEELS=local: the classic builder would build the unused
# PyPI stage too.

ARG BASE=python:3.11-slim
# pypi: download and build the wheels during the build; local: take them from
# .wheelhouse/ in the build context (filled by docker/build-image.sh).
ARG WHEELS=pypi

# ---------------------------------------------------------------- wheels
# Both wheel stages leave /wheels/deps (every dependency) and /wheels/project (decbyzpg
# itself), so that an edit of the project rebuilds only the last, small layer.
FROM ${BASE} AS wheels-pypi
# torch from the CPU-only index (PyPI's default torch wheel pulls in gigabytes of CUDA).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md /src/
COPY peer /src/peer
COPY adversary /src/adversary
COPY proto /src/proto
RUN python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip wheel --no-cache-dir --wheel-dir /wheels/deps --extra-index-url "$TORCH_INDEX" /src \
 && mkdir /wheels/project && mv /wheels/deps/decbyzpg-*.whl /wheels/project/

FROM scratch AS wheels-local
COPY .wheelhouse/ /wheels/

FROM wheels-${WHEELS} AS wheels

# ---------------------------------------------------------------- runtime
FROM ${BASE}
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), "DecByzPG needs Python 3.11, the base has " + sys.version' \
 && groupadd --gid 1000 decbyzpg \
 && useradd --uid 1000 --gid 1000 --home-dir /srv/decbyzpg --create-home --shell /usr/sbin/nologin decbyzpg
# The dependencies, installed by a throwaway pip (the runtime venv has none) from the
# wheelhouse, which is mounted, never copied into a layer.  No index is ever asked.
# Then trimmed of what a peer never loads: torch's C++ headers, CMake files, C++ test
# binaries and test libraries and bundled protoc; every package's `tests` directory.
# Python byte code stays: the container user cannot write it, so without it every start
# of every peer would compile torch's Python modules again.
RUN --mount=type=bind,from=wheels,source=/wheels/deps,target=/wheels \
    set -eu; \
    python3 -m venv --without-pip /opt/decbyzpg; \
    python3 -m venv /tmp/pip; \
    /tmp/pip/bin/pip --python /opt/decbyzpg/bin/python install --no-index --no-cache-dir --no-deps /wheels/*.whl; \
    rm -rf /tmp/pip; \
    site=/opt/decbyzpg/lib/python3.11/site-packages; t=$site/torch; \
    rm -rf "$t/include" "$t/test" "$t/share/cmake" "$t"/bin/*Test "$t"/bin/test_* "$t"/bin/protoc* \
           "$t"/bin/*.pt "$t"/bin/*.ptl "$t"/lib/*_test.so; \
    find "$site" -depth -type d -name tests -prune -exec rm -rf {} +
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    set -eu; \
    python3 -m venv /tmp/pip; \
    /tmp/pip/bin/pip --python /opt/decbyzpg/bin/python install --no-index --no-cache-dir \
        --find-links /wheels/deps /wheels/project/decbyzpg-*.whl; \
    rm -rf /tmp/pip; \
    /opt/decbyzpg/bin/python -c 'import torch, gymnasium, grpc, grpc_health, matplotlib, peer.net.daemon, adversary.daemon'
COPY docker/healthcheck.py /opt/decbyzpg/bin/decbyzpg-health
COPY docker/compose-init.sh /opt/decbyzpg/bin/decbyzpg-compose-init
RUN chmod 0755 /opt/decbyzpg/bin/decbyzpg-health /opt/decbyzpg/bin/decbyzpg-compose-init
ENV PATH=/opt/decbyzpg/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    DECBYZPG_PORT=50051
USER 1000:1000
WORKDIR /srv/decbyzpg
EXPOSE 50051
# SERVING once the daemon listens; a daemon that finished has exited, so there is no
# unhealthy-but-running state to mistake for a failure.  start-period covers torch and
# gymnasium imports on a busy machine; the 15 s timeout covers the probe's own Python start
# there (13 peers on 2 cores took over 5 s, and swarm replaces a task that stays unhealthy).
HEALTHCHECK --interval=15s --timeout=15s --start-period=90s --retries=3 CMD ["decbyzpg-health"]
ENTRYPOINT ["decbyzpg"]
CMD ["--help"]
