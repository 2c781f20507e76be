"""`decbyzpg cluster`: the main job over the network, K daemons on loopback, with live progress."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from peer.cli.common import add_config_flags, config_data, output_dir, print_summary
from peer.engine.config import apply_override
from peer.engine.errors import ExitCode
from peer.lab.configure import MAIN_JOB_ATTACK, MAIN_JOB_BYZANTINE, MAIN_JOB_PEERS


def cmd_cluster(args: argparse.Namespace) -> int:
    from rich.console import Console

    from peer.lab.cluster import Cluster, cluster_config, init_run
    from peer.lab.progress import Progress

    data: dict[str, Any] = config_data(args, {})
    if args.seed is not None:
        data = apply_override(data, ["seed"], args.seed)
    cfg = cluster_config(args.peers, args.byzantine, data)
    out = output_dir(args.out, f"cluster-K{cfg.num_peers}")
    byzantine = list(range(cfg.num_peers - args.byzantine, cfg.num_peers))
    init_run(out / "run", cfg, byzantine, args.attack, base_port=args.base_port, overwrite=True)
    cluster = Cluster(out / "run", out)
    console = Console(stderr=True)
    console.print(f"[bold]cluster[/bold]: {cfg.num_peers} peer processes on loopback "
                  f"({len(byzantine)} x {args.attack}), {cfg.algorithm} on {cfg.env} -> {out}")
    started = time.monotonic()
    interrupted = False
    cluster.start_all()
    progress = Progress(cfg.trajectories_per_agent, quiet=args.quiet)
    try:
        while cluster.running():
            state = cluster.progress()
            if state["iteration"] >= 0:
                progress.update(state["trajectories"], it=state["iteration"], ret=f"{state['return']:.1f}",
                                round_ms=f"{state['latency_ms']:.1f}")
            failed = {k: c for k, c in cluster.failed().items() if k in cluster.honest_ids()}
            if failed:
                console.print(f"[red]honest peer(s) exited with errors: {failed}; see {out}/peers/<id>/daemon.log")
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        console.print("stopping every peer ...")
    finally:
        cluster.stop_all()
        progress.close()
    summary = cluster.merge(time.monotonic() - started, interrupted)
    print_summary("cluster summary", summary, (
        "trajectories_per_agent", "final_honest_return", "trajectories_to_target", "wall_seconds",
        "round_latency_ms_p50", "round_latency_ms_p99", "communication_share", "crypto_share",
        "synchronisation_share", "rounds_timed_out"))
    console.print(f"results: {out}/ (metrics.csv, summary.json, returns.png; peers/<id>/ per peer)")
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.FAILURE if any(k in cluster.honest_ids() for k in cluster.failed()) else ExitCode.SUCCESS


def cmd_merge(args: argparse.Namespace) -> int:
    from rich.console import Console

    from peer.lab.cluster import merge_results, wait_for_peers

    if args.wait:
        wait_for_peers(Path(args.results), Path(args.config) if args.config else None, timeout=args.wait_timeout)
    out, summary = merge_results(Path(args.results), Path(args.config) if args.config else None,
                                 Path(args.out) if args.out else None)
    print_summary("merged honest peers", summary, (
        "iterations", "trajectories_per_agent", "final_honest_return", "trajectories_to_target",
        "round_latency_ms_p50", "round_latency_ms_p99", "rounds_timed_out"))
    Console(stderr=True).print(f"results: {out}/ (metrics.csv, summary.json, returns.png)")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("cluster", help="K peer processes on loopback (default 13, 3 AvgZero), live progress",
                        description="Generate a run, start one process per peer on loopback, show progress, "
                                    "merge the honest peers' results. Ctrl-C stops every process cleanly.")
    add_config_flags(cl)
    cl.add_argument("--peers", type=int, default=MAIN_JOB_PEERS)
    cl.add_argument("--byzantine", type=int, default=MAIN_JOB_BYZANTINE, help="Byzantine peers (and the bound f)")
    cl.add_argument("--attack", default=MAIN_JOB_ATTACK)
    cl.add_argument("--seed", type=int)
    cl.add_argument("--base-port", type=int, default=50100)
    cl.add_argument("--out", help="results directory (default results/<time>-cluster-K<K>)")
    cl.add_argument("--quiet", action="store_true")
    cl.set_defaults(func=cmd_cluster)

    mg = sub.add_parser("merge", help="merge the honest daemons' results of a run into one results directory",
                        description="Read every honest peer's metrics.csv under RESULTS (peer-<id>/ as compose "
                                    "writes them, or peers/<id>/), and write the merged metrics.csv, summary.json "
                                    "and returns.png, as `cluster` does at its end.")
    mg.add_argument("results", metavar="RESULTS", help="directory holding one directory per peer")
    mg.add_argument("--config", metavar="RUN.toml", help="the run file (default RESULTS/run/run.toml)")
    mg.add_argument("--out", help="output directory (default RESULTS/merged)")
    mg.add_argument("--wait", action="store_true",
                    help="first wait until every honest peer has written the run's last iteration")
    mg.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
    mg.set_defaults(func=cmd_merge)
