"""`decbyzpg run` and `decbyzpg trace`: one configuration in one process."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peer.cli.common import add_config_flags, config_data, output_dir, print_summary
from peer.engine.config import RunConfig
from peer.engine.errors import ExitCode
from peer.lab.configure import (
    MAIN_JOB_ATTACK,
    MAIN_JOB_BYZANTINE,
    MAIN_JOB_PEERS,
    resolve_config,
)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags `run_config` reads."""
    add_config_flags(p)
    p.add_argument("--peers", type=int, help=f"K, number of peers (default {MAIN_JOB_PEERS})")
    p.add_argument("--byzantine", type=int, help=f"f, number of Byzantine peers (default {MAIN_JOB_BYZANTINE})")
    p.add_argument("--attack", help=f"attack of the Byzantine peers (default {MAIN_JOB_ATTACK})")
    p.add_argument("--seed", type=int)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The fully validated configuration `run` and `trace` resolve to (nothing is created before it)."""
    extra: dict[str, Any] = {"num_peers": args.peers, "num_byzantine": args.byzantine, "seed": args.seed,
                             "attack.name": args.attack}
    if not args.config:  # the main job
        extra = {"num_peers": MAIN_JOB_PEERS, "num_byzantine": MAIN_JOB_BYZANTINE,
                 **{k: v for k, v in extra.items() if v is not None}}
        if extra["num_byzantine"] > 0:
            extra.setdefault("attack.name", MAIN_JOB_ATTACK)
    return resolve_config(config_data(args, extra))


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from peer.lab.experiment import describe, resumable, run_experiment
    from peer.lab.progress import Progress

    cfg = run_config(args)
    out = output_dir(args.out, f"{cfg.algorithm}-K{cfg.num_peers}")
    console = Console(stderr=True)
    resume = not args.fresh and resumable(out, cfg) is not None
    console.print(f"[bold]{describe(cfg)}[/bold] -> {out}" + (" (resuming its checkpoint)" if resume else ""))
    progress = Progress(cfg.trajectories_per_agent, quiet=args.quiet)
    try:
        summary = run_experiment(cfg, out, resume=resume, progress=lambda row: progress.update(
            row.trajectories_per_agent, it=row.iteration, ret=f"{row.honest_mean_return:.1f}",
            diam=f"{row.honest_diameter:.2g}"))
    except KeyboardInterrupt:
        progress.close()
        console.print(f"interrupted; partial results are in {out}")
        return ExitCode.INTERRUPTED
    progress.close()
    print_summary("summary", summary, ("trajectories_per_agent", "final_honest_return", "last_1000_honest_return",
                                       "trajectories_to_target", "env_steps", "wall_seconds"))
    console.print(f"results: {out}/ (config.toml, metrics.csv, summary.json, returns.png)")
    return ExitCode.SUCCESS


def cmd_trace(args: argparse.Namespace) -> int:
    from peer.lab.trace import trace, write_trace

    cfg = run_config(args)
    out = Path(args.out)
    rows = trace(cfg, args.peer_id)
    write_trace(out, rows)
    print(f"{len(rows)} iterations measured at peer {args.peer_id} -> {out}")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="one in-process configuration (default: 13 peers, 3 AvgZero, CartPole)",
                         description="Run K peers in one process and write a results directory.")
    add_run_flags(run)
    run.add_argument("--out", help="results directory (default results/<time>-<algorithm>-K<K>)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--fresh", action="store_true",
                     help="start from iteration 0 even if --out holds a checkpoint (by default a run of the "
                          "same configuration there is resumed)")
    run.set_defaults(func=cmd_run)

    tr = sub.add_parser("trace", help="per iteration, how far an attack moved one honest peer's aggregate",
                        description="Run in one process (as `run`) and write a CSV, per iteration, of the honest "
                                    "mean's norm, the honest spread, the aggregate's distance from the honest "
                                    "mean and its cosine with it, measured at one honest peer.")
    add_run_flags(tr)
    tr.add_argument("--peer-id", type=int, default=0, help="the honest peer to measure (default 0)")
    tr.add_argument("--out", required=True, help="CSV file to write")
    tr.set_defaults(func=cmd_trace)
