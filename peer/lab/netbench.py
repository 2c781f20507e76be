"""`decbyzpg bench --network`: what the network costs, next to the learning it carries.

One configuration is run twice in one command, side by side: in this process
(`peer.lab.experiment`, the reference) and as K daemon processes on loopback (`Cluster`).
Both produce the same returns (the bit-identity tests check that); what differs is time:

- wall time and CPU time of each (the cluster's CPU is every peer process's, read from
  the kernel's accounting of finished children, so nothing is estimated);
- agreement-round latency p50/p99 (agreement rounds carry no learning, so their latency is
  the protocol's own cost);
- messages and bytes per round and peer, and the honest peers' CPU split: learning
  (sampling and estimating), serialization, crypto (sign and verify), and the rest of the
  process's CPU (gRPC, the event loop, Python) -- and how much of the wall time was spent
  waiting in rounds;
- peak RSS per peer process.

Every peer writes these figures into its network.json when it stops; this module only
launches, waits and adds up.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from peer.engine.config import RunConfig
from peer.engine.errors import RunStateError
from peer.lab.cluster import Cluster, cluster_config, init_run
from peer.lab.configure import MAIN_JOB_ATTACK, resolve_config
from peer.lab.experiment import run_experiment
from peer.net.files import atomic_write
from peer.net.usage import cpu_seconds


def in_process(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """The reference: the same run in this process (one core)."""
    cpu_before, started = time.process_time(), time.perf_counter()
    summary = run_experiment(cfg, out, plot=False)
    return {"wall_seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_before,
            "final_honest_return": summary["final_honest_return"],
            "trajectories_to_target": summary.get("trajectories_to_475")}


def networked(cfg: RunConfig, byzantine: int, attack: str, out: Path, base_port: int,
              timeout: float, tls: bool = False, cross_check: bool = True) -> dict[str, Any]:
    """The same run as K peer processes on loopback (mutual TLS with `tls`); waits for every one to exit."""
    byzantine_ids = list(range(cfg.num_peers - byzantine, cfg.num_peers))
    shutil.rmtree(out, ignore_errors=True)  # a previous benchmark's peers would resume from their checkpoints
    init_run(out / "run", cfg, byzantine_ids, attack, base_port=base_port, overwrite=True, tls=tls,
             network={} if cross_check else {"cross_check": False})
    cluster = Cluster(out / "run", out)
    cpu_before, started, launched = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter(), time.time()
    cluster.start_all()
    try:
        while cluster.running():
            if time.perf_counter() - started > timeout:
                raise RunStateError(f"the cluster did not finish within {timeout:.0f} s; see {out}/peers/*/daemon.log")
            failed = {k: c for k, c in cluster.failed().items() if k in cluster.honest_ids()}
            if failed:
                raise RunStateError(f"honest peer(s) exited with errors {failed} (a port in use from "
                                    f"--base-port?); see {out}/peers/<id>/daemon.log")
            time.sleep(0.2)
    finally:
        cluster.stop_all()
    wall = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
    summary = cluster.merge(wall, interrupted=False)
    result: dict[str, Any] = {
        "wall_seconds": wall, "cpu_seconds": cpu, "final_honest_return": summary["final_honest_return"],
        "trajectories_to_target": summary.get("trajectories_to_target"),
        "round_latency_ms_p50": summary.get("round_latency_ms_p50"),
        "round_latency_ms_p99": summary.get("round_latency_ms_p99"),
        "later_round_latency_ms_p50": summary.get("later_round_latency_ms_p50"),
        "later_round_latency_ms_p99": summary.get("later_round_latency_ms_p99"),
        "rounds_timed_out": summary.get("rounds_timed_out"),
    }
    usages = peer_usages(cluster)
    result.update(peer_figures([usages[k] for k in cluster.honest_ids() if k in usages]))
    # Startup (13 interpreters importing torch) is paid once per process; the in-process run
    # paid it once, before its clock started.  Both figures are shown.
    if usages and all("serving_since" in u for u in usages.values()):
        result["startup_wall_seconds"] = max(u["serving_since"] for u in usages.values()) - launched
        result["startup_cpu_seconds"] = sum(u["startup_cpu_seconds"] for u in usages.values())
        result["wall_seconds_after_startup"] = wall - result["startup_wall_seconds"]
        result["cpu_seconds_after_startup"] = cpu - result["startup_cpu_seconds"]
    return result


def peer_usages(cluster: Cluster) -> dict[int, dict[str, Any]]:
    """Every peer process's figures by peer id: honest peers' network.json, Byzantine ones' adversary.json."""
    usages = {}
    for k in range(cluster.run.config.num_peers):
        report = cluster.peer_dir(k) / ("adversary.json" if k in cluster.byzantine else "network.json")
        if report.exists():
            usage = json.loads(report.read_text()).get("usage")
            if usage is not None:
                usages[k] = usage
    return usages


def peer_figures(usage: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-peer traffic, CPU split and memory (medians over the honest peers' figures)."""
    if not usage:
        return {}

    def median(name: str) -> float | None:
        values = [u[name] for u in usage if name in u]
        return statistics.median(values) if values else None

    def per_round(name: str) -> float | None:
        value = median(name)
        return None if value is None or not rounds else value / rounds

    def part(name: str) -> float:
        return median(name) or 0.0

    rounds = median("rounds") or 0
    measured = part("learning_seconds") + part("serialization_seconds") + part("crypto_seconds")
    return {
        "messages_sent_per_round": per_round("messages_sent"),
        "messages_received_per_round": per_round("messages_received"),
        "bytes_sent_per_round": per_round("bytes_sent"),
        "cpu_split_seconds": {
            "learning": median("learning_seconds"), "serialization": median("serialization_seconds"),
            "crypto": median("crypto_seconds"), "grpc_and_other": part("cpu_seconds") - measured,
            "process_cpu": median("cpu_seconds"), "waiting_in_rounds_wall": median("waiting_seconds"),
            "by_thread_main": median("main_thread_cpu_seconds"), "by_thread_event_loop": median("loop_thread_cpu_seconds"),
            "by_thread_grpc_core_and_poller": median("other_threads_cpu_seconds"),
        },
        "cpu_ms_per_round_per_peer": 1e3 * (part("cpu_seconds") - part("learning_seconds")) / rounds if rounds else None,
        "peak_rss_mb_per_peer": max((u["peak_rss_mb"] for u in usage if "peak_rss_mb" in u), default=None),
        "threads_per_peer": median("threads"),
    }


def network_benchmark(peers: int, byzantine: int, trajectories: int, seed: int, out: Path,
                      attack: str = MAIN_JOB_ATTACK, base_port: int = 51300, skip_in_process: bool = False,
                      timeout: float = 3600.0, tls: bool = False, cross_check: bool = True) -> dict[str, Any]:
    """Both runs of one configuration, one after the other; saved to out/network-bench.json."""
    cfg = cluster_config(peers, byzantine, {"trajectories_per_agent": trajectories, "seed": seed})
    report: dict[str, Any] = {"peers": peers, "byzantine": byzantine, "attack": attack if byzantine else "none",
                              "trajectories_per_agent": trajectories, "seed": seed, "tls": tls,
                              "cross_check": cross_check}
    if not skip_in_process:
        inproc_cfg = resolve_config({"num_peers": peers, "num_byzantine": byzantine, "seed": seed,
                                     "trajectories_per_agent": trajectories,
                                     "attack": {"name": attack if byzantine else "none"}})
        report["in_process"] = in_process(inproc_cfg, out / "in-process")
    report["network"] = networked(cfg, byzantine, attack, out / "network", base_port, timeout, tls, cross_check)
    if "in_process" in report:
        report["wall_ratio"] = report["network"]["wall_seconds"] / report["in_process"]["wall_seconds"]
        report["cpu_ratio"] = report["network"]["cpu_seconds"] / report["in_process"]["cpu_seconds"]
        if "wall_seconds_after_startup" in report["network"]:
            report["wall_ratio_after_startup"] = (report["network"]["wall_seconds_after_startup"]
                                                  / report["in_process"]["wall_seconds"])
            report["cpu_ratio_after_startup"] = (report["network"]["cpu_seconds_after_startup"]
                                                 / report["in_process"]["cpu_seconds"])
    atomic_write(out / "network-bench.json", json.dumps(report, indent=2) + "\n")
    return report


def render(report: dict[str, Any]) -> str:
    """The report as plain text lines (what the command prints)."""
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"K={report['peers']} f={report['byzantine']} ({report['attack']}), "
             f"{report['trajectories_per_agent']} trajectories per agent, seed {report['seed']}"
             + (", mutual TLS" if report.get("tls") else "")
             + ("" if report.get("cross_check", True) else ", no cross-checks")]
    net = report["network"]
    inproc = report.get("in_process", {})
    lines.append(f"{'':28}{'in-process':>14}{'network':>14}{'ratio':>8}")
    ratios = {"wall_seconds": "wall_ratio", "cpu_seconds": "cpu_ratio",
              "wall_seconds_after_startup": "wall_ratio_after_startup",
              "cpu_seconds_after_startup": "cpu_ratio_after_startup"}
    for name in ("wall_seconds", "cpu_seconds", "wall_seconds_after_startup", "cpu_seconds_after_startup",
                 "final_honest_return", "trajectories_to_target"):
        reference = inproc.get(name.replace("_after_startup", ""))
        lines.append(f"{name:28}{fmt(reference):>14}{fmt(net.get(name)):>14}{fmt(report.get(ratios.get(name, ''))):>8}")
    for name in ("startup_wall_seconds", "startup_cpu_seconds"):
        lines.append(f"{name:28}{'':>14}{fmt(net.get(name)):>14}")
    for name in ("round_latency_ms_p50", "round_latency_ms_p99", "later_round_latency_ms_p50",
                 "later_round_latency_ms_p99", "rounds_timed_out", "messages_sent_per_round",
                 "messages_received_per_round", "bytes_sent_per_round", "cpu_ms_per_round_per_peer",
                 "peak_rss_mb_per_peer", "threads_per_peer"):
        lines.append(f"{name:28}{'':>14}{fmt(net.get(name)):>14}")
    for part, seconds in net.get("cpu_split_seconds", {}).items():
        lines.append(f"  {part:26}{'':>14}{fmt(seconds):>14}")
    return "\n".join(lines)


def markdown(reports: list[dict[str, Any]]) -> str:
    """One row per benchmark (e.g. K = 13, 25, 49, or before and after a change), for docs/RESULTS.md."""
    def fmt(value: Any, digits: int = 1) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    head = ("| label | K (f) | trajectories | in-process wall s / CPU s | network wall s / CPU s | ratio wall / CPU "
            "| after startup: ratio wall / CPU | agreement round p50 / p99 ms | rounds r >= 1: p50 / p99 ms | messages / bytes sent per round and peer "
            "| rounds timed out | CPU ms per round per peer (not learning) | peak RSS MB per peer | threads per peer |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        net, inproc = r["network"], r.get("in_process", {})
        lines.append(
            f"| {r.get('label', '')} | {r['peers']} ({r['byzantine']}) | {r['trajectories_per_agent']} "
            f"| {fmt(inproc.get('wall_seconds'))} / {fmt(inproc.get('cpu_seconds'))} "
            f"| {fmt(net['wall_seconds'])} / {fmt(net['cpu_seconds'])} "
            f"| {fmt(r.get('wall_ratio'), 2)} / {fmt(r.get('cpu_ratio'), 2)} "
            f"| {fmt(r.get('wall_ratio_after_startup'), 2)} / {fmt(r.get('cpu_ratio_after_startup'), 2)} "
            f"| {fmt(net.get('round_latency_ms_p50'))} / {fmt(net.get('round_latency_ms_p99'))} "
            f"| {fmt(net.get('later_round_latency_ms_p50'))} / {fmt(net.get('later_round_latency_ms_p99'))} "
            f"| {fmt(net.get('messages_sent_per_round'))} / {fmt(net.get('bytes_sent_per_round'), 0)} "
            f"| {fmt(net.get('rounds_timed_out'))} "
            f"| {fmt(net.get('cpu_ms_per_round_per_peer'))} | {fmt(net.get('peak_rss_mb_per_peer'), 0)} "
            f"| {fmt(net.get('threads_per_peer'), 0)} |")
    return "\n".join(lines)
