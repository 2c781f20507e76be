"""Real daemons on loopback: the network changes nothing."""

from __future__ import annotations

import numpy as np

from adversary.attacks import make_attack
from adversary.daemon import ByzantineDaemon
from peer.config import build_config
from peer.daemon import PeerDaemon
from peer.inprocess import InProcessRun
from tests.netutil import Threads, key_of, make_run

SMALL = {"num_peers": 5, "num_byzantine": 1, "seed": 3, "trajectories_per_agent": 40,
         "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 100, "switch_prob": 0.4}}
# A generous grace period: every message of every round arrives, as in-process.
PATIENT = {"grace": 10.0, "round_timeout": 30.0, "linger": 0.5}


def test_network_run_is_bit_identical_to_in_process(tmp_path) -> None:
    run = make_run(tmp_path, SMALL, byzantine_ids=[4], network=PATIENT)
    history: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}
    threads = Threads()
    for k in range(4):
        daemon = PeerDaemon(run, k, key_of(run, k), tmp_path / f"peer{k}",
                            on_iteration=lambda report, machine, k=k: history[k].append(machine.theta().copy()))
        threads.start(k, daemon)
    byzantine = ByzantineDaemon(run, 4, key_of(run, 4), make_attack("avg_zero"), [4], tmp_path / "peer4")
    threads.start(4, byzantine)
    codes = threads.join(120)
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}

    local = InProcessRun(build_config({**SMALL, "attack": {"name": "avg_zero"}}))
    expected: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}
    for _ in local.iterate(SMALL["trajectories_per_agent"]):
        for k, peer in local.peers.items():
            expected[k].append(peer.theta().copy())
    assert len(expected[0]) >= 4
    for k in range(4):
        assert len(history[k]) == len(expected[k])
        for t, (got, want) in enumerate(zip(history[k], expected[k])):
            assert np.array_equal(got, want), f"peer {k} differs at iteration {t}"
