"""Peers on separate hosts, simulated with one network namespace per peer (docs/DEPLOY.md).

Follows DEPLOY.md's "one peer per host" steps literally: `init --addresses` on one machine,
each host given the run file and only its own key, every daemon started in its own
namespace in no particular order.  Then the faults a real deployment meets: a cut link, 1 %
packet loss on every link, f peers killed, and 20 ms of one-way delay (injected by the
transport: this kernel has no netem).  Each prints its wall time against the fault-free run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from peer.engine.config import build_config
from peer.lab.inprocess import InProcessRun
from peer.net.files import read_metrics
from tests.support import netns

pytestmark = pytest.mark.netns

K, F = 13, 3
BYZANTINE = list(range(K - F, K))
HONEST = list(range(K - F))
PORT = 50051
SETTING = {"num_peers": K, "num_byzantine": F, "seed": 3, "trajectories_per_agent": 200,
           "estimator": {"large_batch": 16, "small_batch": 4, "horizon": 200}}
# every message of every round arrives, as in process: the run must be bit-identical to it
PATIENT = {"grace": 10.0, "round_timeout": 60.0, "startup_timeout": 120.0, "linger": 30.0}
# a deployment's ordinary settings, for the faults
ORDINARY = {"grace": 0.25, "round_timeout": 20.0, "startup_timeout": 120.0, "linger": 60.0}


@pytest.fixture(scope="module")
def lab():
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"NETNS TESTS SKIPPED (not run): {reason}")
    with netns.NetnsLab(K) as hosts:
        yield hosts


def deploy(lab: netns.NetnsLab, tmp: Path, network: dict, start_order=None) -> dict:
    """DEPLOY.md, one peer per host: init on one machine, copy run.toml + one key to each host, start."""
    addresses = ",".join(f"{lab.address(k)}:{PORT}" for k in range(K))
    overrides = [f"--set=network.{name}={value}" for name, value in network.items()]
    overrides += ["--set=estimator.large_batch=16", "--set=estimator.small_batch=4", "--set=estimator.horizon=200",
                  "--set=seed=3"]
    init = netns.subprocess.run(
        netns.decbyzpg("init", "--peers", str(K), "--byzantine", str(F), "--addresses", addresses,
                       "--trajectories", "200", "--out", str(tmp / "made"), *overrides),
        capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    procs = {}
    for k in start_order or range(K):
        host = tmp / f"host-{k}"
        (host / "keys").mkdir(parents=True)
        shutil.copy(tmp / "made" / "run.toml", host / "run.toml")
        shutil.copy(tmp / "made" / "keys" / f"{k}.key", host / "keys" / f"{k}.key")  # its own key only
        role = "adversary" if k in BYZANTINE else "peer"
        procs[k] = lab.popen(k, netns.decbyzpg(role, "--config", str(host / "run.toml"), "--id", str(k),
                                              "--key", str(host / "keys" / f"{k}.key"), "--out",
                                              str(host / "results")), tmp / f"host-{k}.log")
    return procs


def wait(procs: dict, timeout: float = 600.0) -> dict[int, int]:
    end = time.monotonic() + timeout
    codes = {}
    for k, proc in procs.items():
        try:
            codes[k] = proc.wait(max(1.0, end - time.monotonic()))
        except Exception:
            proc.kill()
            codes[k] = proc.wait()
    return codes


def honest_metrics(tmp: Path) -> dict:
    return {k: read_metrics(tmp / f"host-{k}" / "results" / "metrics.csv") for k in HONEST}


def test_thirteen_hosts_complete_a_run_identical_to_in_process(lab, tmp_path, timings) -> None:
    started = time.monotonic()
    procs = deploy(lab, tmp_path, PATIENT, start_order=reversed(range(K)))  # start order is free
    codes = wait(procs)
    wall = time.monotonic() - started
    assert all(code == 0 for code in codes.values()), codes
    metrics = honest_metrics(tmp_path)
    local = InProcessRun(build_config({**SETTING, "attack": {"name": "avg_zero"}}))
    expected = list(local.iterate(SETTING["trajectories_per_agent"]))
    local.close()
    for k in HONEST:
        assert [r.iteration for r in metrics[k]] == [r.iteration for r in expected]  # every iteration written
        assert [r.peer_returns[k] for r in metrics[k]] == pytest.approx(
            [r.peer_returns[k] for r in expected], abs=5e-5)  # 4-decimal CSV rounding
    assert all(r.rounds_timed_out == 0 for k in HONEST for r in metrics[k])
    timings(f"netns: 13 hosts, {len(expected)} iterations, fault-free: {wall:.1f} s wall")


def _run_with(lab, tmp: Path, network: dict, during=None) -> tuple[float, dict, dict]:
    started = time.monotonic()
    procs = deploy(lab, tmp, network)
    if during is not None:
        during(procs, tmp)
    codes = wait(procs)
    return time.monotonic() - started, codes, honest_metrics(tmp)


@pytest.fixture(scope="module")
def baseline(lab, tmp_path_factory):
    wall, codes, metrics = _run_with(lab, tmp_path_factory.mktemp("baseline"), ORDINARY)
    assert all(code == 0 for code in codes.values()), codes
    return wall, metrics


def _wait_iteration(tmp: Path, k: int, iteration: int, timeout: float = 300.0) -> None:
    path = tmp / f"host-{k}" / "results" / "metrics.csv"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if len(read_metrics(path)) > iteration:
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"host {k} never reached iteration {iteration}")


def _iterations_done(tmp: Path, k: int) -> int:
    try:
        return len(read_metrics(tmp / f"host-{k}" / "results" / "metrics.csv"))
    except (OSError, KeyError, ValueError):
        return 0


def test_a_link_cut_for_20_s_heals_and_the_peer_catches_up(lab, tmp_path, baseline, timings) -> None:
    recovery: dict[str, float] = {}

    def cut(procs, tmp):
        _wait_iteration(tmp, 0, 3)
        lab.cut(1)
        time.sleep(20)
        before = {k: _iterations_done(tmp, k) for k in HONEST}
        lab.restore(1)
        restored = time.monotonic()
        # recovery: until every honest peer, the cut one included, has finished a further iteration
        while time.monotonic() - restored < 300 and any(_iterations_done(tmp, k) <= before[k] for k in HONEST):
            time.sleep(0.1)
        recovery["seconds"] = time.monotonic() - restored

    wall, codes, metrics = _run_with(lab, tmp_path, ORDINARY, cut)
    assert all(code == 0 for code in codes.values()), codes
    lengths = {len(rows) for rows in metrics.values()}
    assert len(lengths) == 1  # the cut peer wrote every iteration too
    timed_out = sum(r.rounds_timed_out for rows in metrics.values() for r in rows)
    timings(f"netns: one honest link cut for 20 s: {wall:.1f} s wall against {baseline[0]:.1f} s fault-free, "
            f"{timed_out} honest rounds timed out, every honest peer progressed again {recovery['seconds']:.1f} s "
            "after the link came back")


def test_one_percent_loss_on_every_link_finishes(lab, tmp_path, baseline, timings) -> None:
    def lossy(procs, tmp):
        lab.lose(0.01)

    try:
        wall, codes, metrics = _run_with(lab, tmp_path, ORDINARY, lossy)
    finally:
        for k in range(K):
            netns.subprocess.run(["ip", "netns", "exec", lab.host(k), "iptables", "-F"], capture_output=True)
    assert all(code == 0 for code in codes.values()), codes
    timings(f"netns: 1 % loss on every link: {wall:.1f} s wall against {baseline[0]:.1f} s fault-free "
            f"({wall / baseline[0]:.2f}x)")


def test_f_peers_killed_the_rest_finish(lab, tmp_path, baseline, timings) -> None:
    """f = 3 peers crash (here the three Byzantine ones: with them alive, three crashed honest
    peers would make six faulty, beyond f, and every round would wait for its deadline)."""
    def kill(procs, tmp):
        _wait_iteration(tmp, 0, 3)
        for k in BYZANTINE:
            procs[k].kill()

    wall, codes, metrics = _run_with(lab, tmp_path, ORDINARY, kill)
    assert all(codes[k] == 0 for k in HONEST), codes
    assert len({len(rows) for rows in metrics.values()}) == 1
    assert metrics[0][-1].trajectories_per_agent == baseline[1][0][-1].trajectories_per_agent
    timed_out = sum(r.rounds_timed_out for rows in metrics.values() for r in rows)
    timings(f"netns: f = 3 peers killed at iteration 3: the 10 others finished in {wall:.1f} s "
            f"(fault-free {baseline[0]:.1f} s), {timed_out} honest rounds timed out")


def test_twenty_ms_one_way_delay(lab, tmp_path, baseline, timings) -> None:
    wall, codes, metrics = _run_with(lab, tmp_path, {**ORDINARY, "inject_delay": 0.02, "inject_jitter": 0.005})
    assert all(code == 0 for code in codes.values()), codes
    p50 = np.median([r.round_p50_ms for rows in metrics.values() for r in rows if np.isfinite(r.round_p50_ms)])
    base = np.median([r.round_p50_ms for rows in baseline[1].values() for r in rows if np.isfinite(r.round_p50_ms)])
    timings(f"netns: 20 ms (+0-5 ms jitter) one-way delay: {wall:.1f} s wall against {baseline[0]:.1f} s; "
            f"round p50 {p50:.1f} ms against {base:.1f} ms")
