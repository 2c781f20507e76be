#!/bin/sh
# One-shot `init` service of compose/compose.yaml (installed in the image as
# decbyzpg-compose-init; runs as root, then hands everything to the peers' user).
#
# * /run-data (a named volume): run.toml and keys/<id>.key from `decbyzpg init --compose`,
#   made once.  If run.toml exists it is reused, never overwritten: the peers'
#   checkpoints belong to that run.  `docker compose down -v` drops it.
# * /results (compose/results on the host): one directory per peer, plus run/ with a
#   copy of run.toml and the public roster (no private keys).  Results of an older run
#   (another run file) are moved aside to /results/previous-<time>/, since a peer refuses
#   to resume from another run's checkpoint.
# * Ownership: run file, keys and result directories go to $PEER_UID:$PEER_GID, the user
#   the peer containers run as; keys stay mode 0600 (the daemon refuses looser ones).
#
# Environment: PEERS, BYZANTINE (bound f and number of Byzantine peers, the highest
# ids), ATTACK, TRAJECTORIES (empty: the run file's default), SEED, PEER_UID, PEER_GID,
# NETWORK: settings for the run file's [network] table (docs/PROTOCOL.md), separated by
# commas or spaces, e.g. "grace=10.0, round_timeout=30.0".
set -eu
PEERS=${PEERS:-13}
BYZANTINE=${BYZANTINE:-3}
ATTACK=${ATTACK:-avg_zero}
PEER_UID=${PEER_UID:-1000}
PEER_GID=${PEER_GID:-1000}

if [ -f /run-data/run.toml ]; then
    echo "init: reusing the run file in the volume (run id unchanged; 'docker compose down -v' starts afresh)"
    budget=$(sed -n 's/^trajectories_per_agent = //p' /run-data/run.toml)
    if [ -n "${TRAJECTORIES:-}" ] && [ "$TRAJECTORIES" != "$budget" ]; then
        echo "init: note: TRAJECTORIES=$TRAJECTORIES ignored, the existing run file says $budget"
    fi
else
    set -- --compose --peers "$PEERS" --byzantine "$BYZANTINE" --byzantine-peers "$BYZANTINE" \
           --attack "$ATTACK" --out /run-data
    [ -n "${TRAJECTORIES:-}" ] && set -- "$@" --trajectories "$TRAJECTORIES"
    [ -n "${SEED:-}" ] && set -- "$@" --set "seed=$SEED"
    # NETWORK: key=value settings of the run file's [network] table, validated by init
    for setting in $(echo "${NETWORK:-}" | tr ',' ' '); do
        set -- "$@" --set "network.$setting"
    done
    decbyzpg init "$@"
    [ -n "${NETWORK:-}" ] && echo "init: [network] $NETWORK"
    if ls -d /results/peer-* >/dev/null 2>&1; then
        old=/results/previous-$(date -u +%Y%m%d-%H%M%S)
        mkdir -p "$old"
        mv /results/peer-* "$old"/
        [ -d /results/run ] && mv /results/run "$old"/
        [ -d /results/merged ] && mv /results/merged "$old"/
        echo "init: results of the previous run moved to $old"
    fi
fi
chown -R "$PEER_UID:$PEER_GID" /run-data
chmod 0755 /run-data /run-data/keys
chmod 0644 /run-data/run.toml
chmod 0600 /run-data/keys/*.key

mkdir -p /results/run
cp /run-data/run.toml /results/run/run.toml
i=0
while [ "$i" -lt "$PEERS" ]; do
    mkdir -p "/results/peer-$i"
    chown "$PEER_UID:$PEER_GID" "/results/peer-$i"
    i=$((i + 1))
done
mkdir -p /results/merged   # the merge service's output, written as the peers' user
chown -R "$PEER_UID:$PEER_GID" /results/run /results/merged
echo "init: $PEERS peers, run file /run-data/run.toml, results in compose/results/peer-<id> (owner $PEER_UID:$PEER_GID)"
