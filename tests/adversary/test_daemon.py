"""adversary.daemon: a restarted Byzantine daemon resumes where it stopped."""

from __future__ import annotations

import json
import time

import pytest

from adversary.attacks import make_attack
from adversary.daemon import ByzantineDaemon
from peer.engine.errors import ExitCode
from tests.support.netutil import key_of, make_run

pytestmark = pytest.mark.network

SMALL = {"num_peers": 5, "num_byzantine": 1, "trajectories_per_agent": 40,
         "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}}


def test_a_finished_byzantine_daemon_restarted_does_not_replay_the_run(tmp_path) -> None:
    run = make_run(tmp_path, SMALL, byzantine_ids=[4], network={"round_timeout": 30.0, "linger": 0.0})
    daemon = ByzantineDaemon(run, 4, key_of(run, 4), make_attack("avg_zero"), [4], tmp_path / "peer4")
    total = daemon.schedule.iteration_count
    (tmp_path / "peer4").mkdir()
    daemon.progress_path.write_text(json.dumps({"run_id": run.run_id.hex(), "peer_id": 4, "next_iteration": total}))
    started = time.monotonic()
    assert daemon.serve(linger=0.0) == ExitCode.SUCCESS
    assert time.monotonic() - started < 10  # not total x rounds x round_timeout waiting for absent peers


def test_progress_of_another_run_or_peer_is_ignored(tmp_path) -> None:
    run = make_run(tmp_path, SMALL, byzantine_ids=[4])
    daemon = ByzantineDaemon(run, 4, key_of(run, 4), make_attack("avg_zero"), [4], tmp_path / "peer4")
    (tmp_path / "peer4").mkdir()
    daemon.progress_path.write_text(json.dumps({"run_id": "00" * 32, "peer_id": 4, "next_iteration": 7}))
    assert daemon.resume_at() == 0
    daemon.progress_path.write_text(json.dumps({"run_id": run.run_id.hex(), "peer_id": 3, "next_iteration": 7}))
    assert daemon.resume_at() == 0
    daemon.progress_path.write_text(json.dumps({"run_id": run.run_id.hex(), "peer_id": 4, "next_iteration": 7}))
    assert daemon.resume_at() == 7
