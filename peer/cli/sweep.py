"""`decbyzpg sweep` and `decbyzpg matrix`: many runs, resumable, with a table and a figure."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from peer.cli.common import (
    DEFAULT_RESULTS,
    add_config_flags,
    config_data,
    csv_list,
    int_list,
    seeds,
)
from peer.engine.errors import ConfigError, ExitCode, RunStateError
from peer.lab.configure import MAIN_JOB_ATTACK, MAIN_JOB_BYZANTINE, MAIN_JOB_PEERS

# peer.lab.sweep.SUITES, spelled out so that parsing arguments does not import torch
# (tests/lab/test_sweep.py checks the two agree)
SWEEP_SUITES = ("speedup", "attacks", "lunar", "lunar-attacks", "bucketing", "stability")


def cmd_sweep(args: argparse.Namespace) -> int:
    from peer.lab import sweep

    base = config_data(args, {})
    budget = base.pop("trajectories_per_agent", None)
    if args.suite:
        jobs, title = sweep.suite(args.suite, args.seeds, budget, base)
        name = args.suite
        if args.panels:
            offered = list(dict.fromkeys(job.panel for job in jobs))
            unknown = [p for p in args.panels if p not in offered]
            if unknown:
                raise ConfigError(f"suite {args.suite!r} has no panel {unknown[0]!r} (panels: {', '.join(offered)})")
            jobs = [job for job in jobs if job.panel in args.panels]
    else:
        if not args.algorithms:
            raise ConfigError("sweep needs --suite or --algorithms (with --peers, --byzantine, --attacks)")
        if args.panels:
            raise ConfigError("--panels selects panels of a --suite")
        jobs = sweep.grid(args.algorithms, args.peers, args.byzantine, args.attacks or [MAIN_JOB_ATTACK],
                          args.seeds, base, budget, args.allow_beyond_tolerance)
        title, name = args.title or "Sweep", "sweep"
    out = Path(args.out) if args.out else DEFAULT_RESULTS / f"sweep-{name}"
    if args.finished_only:
        results = sweep.finished_results(jobs, out)
        if not results:
            raise RunStateError(f"{out} holds no finished run of this sweep (run it without --finished-only first)")
        print(f"{len({job.slug for job, _ in results})} of {len({job.slug for job in jobs})} runs finished")
    else:
        results = sweep.run_jobs(jobs, out, args.jobs)
    threshold = None if (args.suite or "").startswith("lunar") else 475.0
    rows = sweep.write_outputs(results, out, name, title, threshold)
    print(sweep.markdown_table(rows))
    print(f"figure: {out / (name + '.png')}  table: {out / 'table.md'}")
    return ExitCode.SUCCESS


def cmd_matrix(args: argparse.Namespace) -> int:
    from peer.lab.matrix import DEFAULT_ATTACKS, run_matrix, summarize_rows
    from peer.lab.sweep import markdown_table

    base = config_data(args, {})
    if args.trajectories is None:
        base["trajectories_per_agent"] = 2000
    rows = run_matrix(Path(args.out), base, args.attacks or list(DEFAULT_ATTACKS), args.algorithms, args.seeds,
                      args.peers, args.byzantine, args.misbehaviour, args.base_port, args.timeout)
    print(markdown_table(summarize_rows(rows)))
    print(f"table: {Path(args.out) / 'table.md'}  figure: {Path(args.out) / 'matrix.png'}")
    return ExitCode.SUCCESS


def register(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="a grid of runs in parallel, with figures and a table",
                        description="Run a named suite (the paper's figures) or a grid, then plot mean +/- std "
                                    "over seeds. Finished runs are reused, so an interrupted sweep resumes.")
    add_config_flags(sw)
    sw.add_argument("--suite", choices=SWEEP_SUITES,
                    help="the paper's figure to reproduce, or 'stability' (issue #14: 20 seeds are meant, "
                         "3,000 trajectories by default)")
    sw.add_argument("--panels", type=csv_list,
                    help="with --suite: run only these panels, e.g. 'single agent,AvgZero'")
    sw.add_argument("--title", help="title of the figure and table (grids)")
    sw.add_argument("--algorithms", type=csv_list, help="grid: e.g. decbyzpg,dec-page-pg")
    sw.add_argument("--peers", type=int_list, default=[MAIN_JOB_PEERS], help="grid: K values, e.g. 5,13")
    sw.add_argument("--byzantine", type=int_list, default=[0], help="grid: f values, e.g. 0,3")
    sw.add_argument("--attacks", type=csv_list, help="grid: attacks for f > 0, e.g. avg_zero,alie")
    sw.add_argument("--seeds", type=seeds, default=seeds("0-4"), help="e.g. 0-4 (default) or 0,3,9")
    sw.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    sw.add_argument("--out", help="sweep directory (default results/sweep-<suite>)")
    sw.add_argument("--finished-only", action="store_true",
                    help="run nothing: write the table and figure from the runs already finished (to look at a "
                         "long sweep while it runs, or after it was interrupted)")
    sw.set_defaults(func=cmd_sweep)

    mx = sub.add_parser("matrix", help="resilience matrix: every attack over the wire, DecByzPG vs Dec-PAGE-PG",
                        description="For each attack and algorithm, a K-peer multi-process run on loopback; a table "
                                    "and a figure of the outcome, rejections by reason, equivocations, crashes, stalls.")
    add_config_flags(mx)
    mx.add_argument("--attacks", type=csv_list,
                    help="attacks to run, each NAME or NAME:KEY=VALUE[:KEY=VALUE] for a variant, e.g. "
                         "none,alie,ipm:epsilon=4 (default: none, every attack at its default strength, "
                         "alie:z=6 and ipm:epsilon=4)")
    mx.add_argument("--algorithms", type=csv_list, default=["decbyzpg", "dec-page-pg"])
    mx.add_argument("--seeds", type=seeds, default=seeds("0-2"), help="e.g. 0-2 (default)")
    mx.add_argument("--peers", type=int, default=MAIN_JOB_PEERS)
    mx.add_argument("--byzantine", type=int, default=MAIN_JOB_BYZANTINE)
    mx.add_argument("--misbehaviour", type=csv_list, default=[],
                    help="protocol misbehaviour kinds the Byzantine peers add every 5th round, or 'all'")
    mx.add_argument("--base-port", type=int, default=50300)
    mx.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run counts as stalled")
    mx.add_argument("--out", default="results/matrix")
    mx.set_defaults(func=cmd_matrix)
