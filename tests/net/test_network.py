"""Real daemons on loopback: the network changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from adversary.attacks import make_attack
from adversary.daemon import ByzantineDaemon
from peer.engine.config import build_config
from peer.engine.schedule import EXCLUSION_LAG
from peer.lab.inprocess import InProcessRun
from peer.net.daemon import PeerDaemon
from tests.support.netutil import Threads, key_of, make_run

pytestmark = pytest.mark.network

SMALL = {"num_peers": 5, "num_byzantine": 1, "seed": 3, "trajectories_per_agent": 40,
         "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 100, "switch_prob": 0.4}}
# A generous grace period: every message of every round arrives, as in-process.
PATIENT = {"grace": 10.0, "round_timeout": 30.0, "linger": 0.5}


# Not equivocation: Pull relays every signed message a peer holds, so which of a Byzantine's
# two versions a peer meets first depends on timing (first valid wins); in process it cannot.
@pytest.mark.parametrize("algorithm, attack", [("decbyzpg", "avg_zero"), ("byzpg", "large_noise"),
                                               ("dec-page-pg", "alie")])
def test_network_run_is_bit_identical_to_in_process(tmp_path, algorithm: str, attack: str) -> None:
    assert_network_run_matches_in_process(tmp_path, {**SMALL, "algorithm": algorithm, "allow_beyond_tolerance": True},
                                          attack)


def test_candidate_default_options_are_bit_identical_over_the_network(tmp_path) -> None:
    """Nearest-neighbour mixing, v_t aggregated in every iteration, the drift clip and forced large
    batches (issue #14's candidate default) follow the same rules in the daemon as in process."""
    estimator = {**SMALL["estimator"], "drift_clip": 0.5, "max_small_steps": 2}
    assert_network_run_matches_in_process(tmp_path, {**SMALL, "estimator": estimator,
                                                     "aggregation": {"rule": "nnm+rfa", "every_iteration": True}},
                                          "avg_zero")


def assert_network_run_matches_in_process(tmp_path, setting: dict, attack: str, tls: bool = False) -> None:
    """Four honest daemons and one Byzantine on loopback: every honest peer's parameters after
    every iteration equal the in-process engine's, bit for bit."""
    run = make_run(tmp_path, setting, byzantine_ids=[4], network=PATIENT, tls=tls)
    history: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}
    threads = Threads()
    for k in range(4):
        daemon = PeerDaemon(run, k, key_of(run, k), tmp_path / f"peer{k}",
                            on_iteration=lambda report, machine, k=k: history[k].append(machine.theta().copy()))
        threads.start(k, daemon)
    byzantine = ByzantineDaemon(run, 4, key_of(run, 4), make_attack(attack), [4], tmp_path / "peer4")
    threads.start(4, byzantine)
    codes = threads.join(120)
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}

    local = InProcessRun(build_config({**setting, "attack": {"name": attack}}))
    expected: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}
    for _ in local.iterate(setting["trajectories_per_agent"]):
        for k, peer in local.peers.items():
            expected[k].append(peer.theta().copy())
    assert len(expected[0]) >= 4
    for k in range(4):
        assert len(history[k]) == len(expected[k])
        for t, (got, want) in enumerate(zip(history[k], expected[k])):
            assert np.array_equal(got, want), f"peer {k} differs at iteration {t}"


def test_junk_is_rejected_with_reason_codes_and_changes_nothing(tmp_path) -> None:
    import hashlib
    import time

    import grpc
    from decbyzpg.v1 import peer_pb2

    from peer.engine.schedule import Phase
    from peer.net import reads, wire

    network = {"grace": 0.3, "round_timeout": 30.0, "linger": 1.0, "retain_iterations": 1,
               "max_message_bytes": 65536, "window_ahead": 2}
    run = make_run(tmp_path, {**SMALL, "trajectories_per_agent": 60}, network=network)
    history: list[np.ndarray] = []
    daemons = {}
    threads = Threads()
    for k in range(4):
        daemons[k] = PeerDaemon(run, k, key_of(run, k), tmp_path / f"peer{k}",
                                on_iteration=(lambda r, m: history.append(m.theta().copy())) if k == 0 else None)
        threads.start(k, daemons[k])
    target = daemons[0].transport
    while target.iteration < 3:
        time.sleep(0.05)
    dim = int(daemons[0].machine.theta().size)
    bad_key, run_id = key_of(run, 4), run.run_id
    t = target.iteration
    good = np.zeros(dim, np.float32)

    def body(**over) -> bytes:
        fields = dict(run_id=run_id, iteration=t, phase=Phase.AGREEMENT, round=0, sender=4, length=dim,
                      vector=wire.encode_vector(good))
        fields.update(over)
        return peer_pb2.RoundMessage(**fields).SerializeToString()

    tampered = wire.sign_body(bad_key, 4, body())
    tampered.signature = bytes(64)
    junk = {
        "MALFORMED": b"\xff\x00 definitely not protobuf",
        "TOO_LARGE": wire.sign_body(bad_key, 4, body(vector=b"\0" * 80000, length=20000)).SerializeToString(),
        "UNKNOWN_SENDER": wire.sign_body(bad_key, 99, body(sender=99)).SerializeToString(),
        "BAD_SIGNATURE": tampered.SerializeToString(),
        "SENDER_MISMATCH": wire.sign_body(bad_key, 4, body(sender=1)).SerializeToString(),
        "WRONG_RUN": wire.sign_body(bad_key, 4, body(run_id=hashlib.sha256(b"other").digest())).SerializeToString(),
        "STALE": wire.sign_body(bad_key, 4, body(iteration=0)).SerializeToString(),
        "TOO_FAR_AHEAD": wire.sign_body(bad_key, 4, body(iteration=10**6)).SerializeToString(),
        "BAD_PHASE": wire.sign_body(bad_key, 4, body(phase=Phase.MODEL)).SerializeToString(),
        "BAD_ROUND": wire.sign_body(bad_key, 4, body(round=99)).SerializeToString(),
        "BAD_LENGTH": wire.sign_body(bad_key, 4, body(length=dim + 1)).SerializeToString(),
        "NON_FINITE": wire.sign_body(bad_key, 4, body(vector=wire.encode_vector(np.full(dim, np.nan)))).SerializeToString(),
        "SELF": wire.sign_body(bad_key, 0, body(sender=0)).SerializeToString(),
    }
    impersonation = wire.sign_body(bad_key, 1, body(sender=1)).SerializeToString()  # peer 1's id, peer 4's key
    channel = grpc.insecure_channel(run.peer(0).address)
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="decbyzpg.v1.Peer"),
                                                       timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    push = channel.unary_unary("/decbyzpg.v1.Peer/Push", request_serializer=None,
                               response_deserializer=peer_pb2.PushReply.FromString)
    replies = {name: wire.reason_name(push(raw, timeout=5).reason) for name, raw in junk.items()}
    assert replies == {name: name for name in junk}
    assert wire.reason_name(push(impersonation, timeout=5).reason) == "BAD_SIGNATURE"
    # replay: a genuine message of peer 1, fetched through Pull and pushed again
    pull = channel.unary_unary("/decbyzpg.v1.Peer/Pull", request_serializer=peer_pb2.PullRequest.SerializeToString,
                               response_deserializer=peer_pb2.PullReply.FromString)
    # (Pull answers roster members: peer 4, silent in this run, asks)
    request = peer_pb2.PullRequest(run_id=run_id, iteration=target.iteration, phase=Phase.AGREEMENT, round=0)
    held = pull(reads.authorize(request, "Pull", run_id, 4, bad_key), timeout=5).messages
    replayed = [m for m in held if m.sender == 1]
    if replayed:
        assert wire.reason_name(push(replayed[0].SerializeToString(), timeout=5).reason) in {"DUPLICATE", "STALE"}
    channel.close()
    codes = threads.join(120)
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0}
    counts = target.rejections.counts()
    for name in junk:
        assert counts.get(name, 0) >= 1, (name, counts)

    local = InProcessRun(build_config({**SMALL, "trajectories_per_agent": 60, "attack": {"name": "silence"}}))
    expected = [local.peers[0].theta().copy() for _ in local.iterate(60)]
    assert len(history) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(history, expected))


def test_byzantine_daemon_with_protocol_misbehaviour_changes_nothing(tmp_path, capsys) -> None:
    """AvgZero plus every kind of protocol junk: rejected with its code, and the equivocations
    get the Byzantine peer excluded by every honest peer from the same iteration on; the
    results are the engine's with that exclusion, bit for bit."""
    import json

    from adversary.misbehaviour import EXPECTED_REASON

    run = make_run(tmp_path, SMALL, byzantine_ids=[4], network=PATIENT)
    history: list[np.ndarray] = []
    daemons = {k: PeerDaemon(run, k, key_of(run, k), tmp_path / f"peer{k}",
                             on_iteration=(lambda r, m: history.append(m.theta().copy())) if k == 0 else None)
               for k in range(4)}
    threads = Threads()
    for k, daemon in daemons.items():
        threads.start(k, daemon)
    byzantine = ByzantineDaemon(run, 4, key_of(run, 4), make_attack("avg_zero"), [4], tmp_path / "peer4",
                                options={"misbehaviour": "all", "misbehaviour_every": 2})
    threads.start(4, byzantine)
    import time

    from peer.cli.main import main

    while daemons[0].transport.iteration < 5 and not daemons[0].transport.finished:
        time.sleep(0.02)  # by now previous-round equivocations have arrived
    assert main(["status", run.peer(0).address, "--evidence"]) != 0  # reads are for roster members
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["status", run.peer(0).address, "--evidence", "--config", str(run.path), "--id", "1",
                 "--key", str(run.path.parent / "keys" / "1.key")]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["peer_id"] == 0 and reported["rejected"].get("MALFORMED", 0) > 0
    assert reported["equivocations"] and all(e["sender"] == 4 and e["first"] != e["second"]
                                             for e in reported["equivocations"])
    assert threads.join(120) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}

    excluded = [json.loads((tmp_path / f"peer{k}" / "network.json").read_text())["excluded"] for k in range(4)]
    assert excluded[0].keys() == {"4"} and all(e == excluded[0] for e in excluded), excluded
    start = excluded[0]["4"]
    local = InProcessRun(build_config({**SMALL, "attack": {"name": "avg_zero"}}))
    for k in range(4):
        local.peers[k].exclude(4, proven_at=start - EXCLUSION_LAG)
    expected = [local.peers[0].theta().copy() for _ in local.iterate(SMALL["trajectories_per_agent"])]
    assert 0 < start < len(expected) - 1  # the exclusion happened inside the run
    assert len(history) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(history, expected))

    replies = json.loads((tmp_path / "peer4" / "adversary.json").read_text())["replies"]
    for kind, reason in EXPECTED_REASON.items():
        if kind == "replay":  # a replayed message is a duplicate, or stale once pruned
            assert replies.get("replay->DUPLICATE", 0) + replies.get("replay->STALE", 0) > 0, replies
            continue
        assert replies.get(f"{kind}->{reason}", 0) > 0, (kind, replies)
    assert not [k for k in replies if k.endswith("->ACCEPTED")], replies
    network = json.loads((tmp_path / "peer0" / "network.json").read_text())
    assert network["equivocators"] == [4] and network["evidence"] >= 1
