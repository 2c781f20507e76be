"""`decbyzpg bench`: the speed figures of docs/RESULTS.md, measured, printed and saved.

Speed targets are checked here rather than by timed unit tests, which would be flaky on
a shared 2-core machine.  Each figure says what it times.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peer.engine import randomness
from peer.engine.aggregators import make_aggregator
from peer.engine.agreement import MDA, make_agreement
from peer.engine.config import PolicyConfig
from peer.engine.mda import MDATimeout
from peer.engine.policy import build_policy
from peer.engine.sampling import Sampler
from peer.engine.vectors import diameter, pairwise_distances
from peer.lab.configure import (
    MAIN_JOB_ATTACK,
    MAIN_JOB_BYZANTINE,
    MAIN_JOB_PEERS,
    resolve_config,
)
from peer.lab.experiment import run_experiment
from peer.net.files import atomic_write


def env_steps_per_second(env_id: str, hidden: tuple[int, ...], activation: str, n: int, batches: int) -> dict:
    """Environment steps per second of one peer's sampler, policy forward included."""
    torch.set_num_threads(1)
    sampler = Sampler(env_id, 1000)
    policy = build_policy(PolicyConfig(hidden=hidden, activation=activation), sampler.observation_space,
                          sampler.action_space, 0)
    rng = np.random.default_rng(0)
    sampler.sample(n, policy.act, rng)  # warm-up
    steps, vector_steps = 0, 0
    started = time.perf_counter()
    for _ in range(batches):
        batch = sampler.sample(n, policy.act, rng)
        steps += batch.env_steps
        vector_steps += batch.mask.shape[1]
    seconds = time.perf_counter() - started
    sampler.close()
    return {"env": env_id, "batch": n, "env_steps": steps, "seconds": seconds,
            "steps_per_second": steps / seconds, "us_per_step": 1e6 * seconds / steps,
            "policy_forwards": vector_steps}


def _time(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def aggregation_costs(k: int, f: int, d: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((k, d)).astype(np.float32)
    rows = []
    for name in ("mean", "median", "trimmed_mean", "rfa", "krum", "multi_krum", "centered_clipping",
                 "bucketing+rfa", "bucketing+krum"):
        agg = make_aggregator(name, f)
        seconds = _time(lambda: agg(x, randomness.stream(b"b", 0)), repeats)
        rows.append({"rule": name, "K": k, "d": d, "ms": 1e3 * seconds})
    return rows


def agreement_costs(k: int, f: int, d: int, rounds: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(d) + 0.1 * rng.standard_normal((k, d))).astype(np.float32)
    rows = []
    for name in ("mda", "gda"):
        rule = make_agreement(name)
        seconds = _time(lambda: rule(x[0], x, k - f), repeats)
        rows.append({"rule": name, "K": k, "d": d, "ms_per_round": 1e3 * seconds,
                     "ms_per_iteration": 1e3 * seconds * rounds})
    return rows


def timed_run(trajectories: int, out: Path) -> dict:
    """Wall time of the main job (13 peers, 3 AvgZero, DecByzPG, CartPole) to a budget."""
    cfg = resolve_config({"num_peers": MAIN_JOB_PEERS, "num_byzantine": MAIN_JOB_BYZANTINE,
                          "attack": {"name": MAIN_JOB_ATTACK},
                          "trajectories_per_agent": trajectories})
    summary = run_experiment(cfg, out, plot=False)
    return {"trajectories_per_agent": summary["trajectories_per_agent"], "wall_seconds": summary["wall_seconds"],
            "env_steps": summary["env_steps"], "final_honest_return": summary["final_honest_return"],
            "trajectories_to_475": summary["trajectories_to_475"]}


def run_benchmarks(trajectories: int, quick: bool = False, mda: bool = True,
                   out: Path = Path("results/bench.json")) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    report: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpu": platform.processor()
                                          or platform.machine(), "torch": torch.__version__,
                                          "torch_threads": 1}}
    batches = 2 if quick else 10
    report["sampling"] = [
        env_steps_per_second("CartPole-v1", (16, 16), "relu", 50, batches),
        env_steps_per_second("CartPole-v1", (16, 16), "relu", 4, batches),
        env_steps_per_second("LunarLander-v3", (64, 64), "tanh", 96, 1 if quick else 3),
    ]
    repeats = 5 if quick else 30
    report["aggregation"] = aggregation_costs(13, 3, 386, repeats) + aggregation_costs(13, 3, 4996, repeats)
    report["agreement"] = agreement_costs(13, 3, 386, 3, repeats) + agreement_costs(13, 3, 4996, 3, repeats)
    if mda:
        report["mda_scaling"] = benchmark_mda(ks=(13, 25, 31, 64), d=386, repeats=3 if quick else 5,
                                              time_limit_s=5.0 if quick else 20.0, verbose=False)
    report["timed_run"] = timed_run(300 if quick else trajectories, Path("results/bench-run"))
    atomic_write(out, json.dumps(report, indent=2) + "\n")

    for title, rows in (("sampling (one peer)", report["sampling"]), ("aggregation (K=13, f=3)", report["aggregation"]),
                        ("agreement (K=13, f=3, R=3)", report["agreement"]),
                        ("exact MDA scaling", report.get("mda_scaling", [])),
                        ("13-peer in-process run", [report["timed_run"]])):
        if not rows:
            continue
        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()])
        console.print(table)
    console.print(f"saved {out}")
    return report


def _bench_inputs(case: str, k: int, f: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Benchmark inputs: K rows, the honest ones clustered, the f Byzantine ones adversarial."""
    if case == "iid":
        return rng.standard_normal((k, d))
    honest = rng.standard_normal(d) + 0.1 * rng.standard_normal((k - f, d))
    centre = honest.mean(axis=0)
    h_diam = diameter(pairwise_distances(honest))
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    # Place the Byzantine cluster on the ray centre + r u so that its farthest honest vector
    # is at 0.99 of the honest diameter: every Byzantine vector is then compatible with the
    # whole honest set at the optimal threshold and with many mixed subsets slightly above it.
    target = 0.99 * h_diam
    lo, hi = 0.0, 2.0 * h_diam
    for _ in range(60):
        r = 0.5 * (lo + hi)
        far = float(np.sqrt(np.sum((honest - (centre + r * u)) ** 2, axis=1)).max())
        lo, hi = (r, hi) if far < target else (lo, r)
    byz = centre + lo * u + 1e-3 * h_diam * rng.standard_normal((f, d)) / math.sqrt(d)
    x = np.concatenate([honest, byz])
    return x[rng.permutation(k)]


def benchmark_mda(
    ks: tuple[int, ...] = (13, 25, 31, 64),
    d: int = 386,
    repeats: int = 5,
    seed: int = 0,
    time_limit_s: float = 20.0,
    cases: tuple[str, ...] = ("adversarial", "iid"),
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Wall time of one exact MDA round (``MDA()(own, received, q)``) for K inputs.

    f = (K - 1) // 4, q = K - f. Cases: "adversarial" -- K - f honest vectors N(0, 1) centre
    plus N(0, 0.1^2) noise, f Byzantine vectors in a tight cluster just inside the honest
    diameter in a fixed random direction (the MDA-fooling placement); "iid" -- all K vectors
    i.i.d. N(0, I), no structure, so the threshold graph near the optimum is random.
    Each (K, case) gets ``repeats`` fresh inputs; a call that would end after the per-(K,
    case) budget ``time_limit_s`` is aborted and the row reports ``over_cap=True`` (timings
    then cover the completed calls only). Rows: K, f, q, case, d, runs, median_s, max_s,
    over_cap, subsets (= C(K, q), what enumeration would visit).

    `decbyzpg bench` prints the timings and docs/RESULTS.md tabulates them; the search is
    exponential only in m - q <= f (vertex-cover branching), never in K.
    """
    rows: list[dict[str, Any]] = []
    for k in ks:
        f = (k - 1) // 4
        q = k - f
        for case in cases:
            rng = np.random.default_rng([seed, k, len(case)])
            times: list[float] = []
            over = False
            start = time.perf_counter()
            for _ in range(repeats):
                if time.perf_counter() > start + time_limit_s:
                    over = True
                    break
                x = _bench_inputs(case, k, f, d, rng)
                t0 = time.perf_counter()
                try:
                    MDA(deadline=start + time_limit_s)(x[0], x, q)
                except MDATimeout:
                    over = True
                    break
                times.append(time.perf_counter() - t0)
            row = {
                "K": k,
                "f": f,
                "q": q,
                "case": case,
                "d": d,
                "runs": len(times),
                "median_s": statistics.median(times) if times else None,
                "max_s": max(times) if times else None,
                "over_cap": over,
                "subsets": math.comb(k, q),
            }
            rows.append(row)
            if verbose:
                med = "-" if row["median_s"] is None else f"{row['median_s']:.4f}"
                mx = "-" if row["max_s"] is None else f"{row['max_s']:.4f}"
                print(
                    f"K={k:4d} f={f:3d} q={q:4d} {case:12s} runs={row['runs']} median_s={med} "
                    f"max_s={mx} over_cap={over} C(K,q)={row['subsets']:.3e}"
                )
    return rows
