"""`decbyzpg cluster`: the main job over the network, on loopback, with live progress."""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import time
from pathlib import Path
from typing import Any

from peer.cluster import Cluster, cluster_config, init_run
from peer.config import apply_override


def run_cluster(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    if args.seed is not None:
        data = apply_override(data, ["seed"], args.seed)
    cfg = cluster_config(args.peers, args.byzantine, data)
    out = Path(args.out) if args.out else Path("results") / (
        _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-cluster-K{cfg.num_peers}")
    byzantine = list(range(cfg.num_peers - args.byzantine, cfg.num_peers))
    init_run(out / "run", cfg, byzantine, args.attack, base_port=args.base_port, overwrite=True)
    cluster = Cluster(out / "run", out)
    console = Console(stderr=True)
    console.print(f"[bold]cluster[/bold]: {cfg.num_peers} peer processes on loopback "
                  f"({len(byzantine)} x {args.attack}), {cfg.algorithm} on {cfg.env} -> {out}")
    started = time.monotonic()
    interrupted = False
    cluster.start_all()
    bar = tqdm(total=cfg.trajectories_per_agent, unit="traj", desc="trajectories/agent", disable=args.quiet,
               dynamic_ncols=True)
    try:
        while cluster.running():
            state = cluster.progress()
            bar.update(max(0, state["trajectories"] - bar.n))
            if state["iteration"] >= 0:
                bar.set_postfix(it=state["iteration"], ret=f"{state['return']:.1f}",
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
        bar.close()
    summary = cluster.merge(time.monotonic() - started, interrupted)
    table = Table(title="cluster summary", show_header=False)
    for key in ("trajectories_per_agent", "final_honest_return", "trajectories_to_475", "wall_seconds",
                "round_latency_ms_p50", "round_latency_ms_p99", "communication_share", "crypto_share",
                "synchronisation_share",
                "rounds_timed_out"):
        value = summary.get(key)
        table.add_row(key, "never" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value)))
    Console().print(table)
    console.print(f"results: {out}/ (metrics.csv, summary.json, returns.png; peers/<id>/ per peer)")
    if interrupted:
        return 130
    return 1 if any(k in cluster.honest_ids() for k in cluster.failed()) else 0
