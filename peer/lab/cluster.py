"""Local K-peer deployments: generate run files and keys, launch and watch the daemons.

`init_run` writes a complete run directory (run.toml with the roster and pinned public
keys, one private key per peer, and, for Byzantine peers, the adversary section that
honest peers never read).  `Cluster` starts one OS process per peer on loopback, shows
live progress from the peers' metrics files, stops every process cleanly on Ctrl-C, and
merges the honest peers' logs into the engine's results format.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import tomli_w

from peer.engine.config import RunConfig, build_config
from peer.engine.errors import ConfigError, RunStateError
from peer.engine.metrics import IterationMetrics
from peer.engine.sampling import target_return
from peer.lab.configure import MAIN_JOB_ATTACK
from peer.lab.results import ResultsWriter, summarize
from peer.net.crypto import generate_key
from peer.net.files import atomic_write, read_metrics, toml_safe
from peer.net.tls import make_certificates, tls_table


def roster_addresses(num_peers: int, host: str, base_port: int, compose: bool,
                     explicit: Sequence[str] | None = None) -> list[str]:
    """Where each peer listens: `explicit` (one host:port per peer, e.g. one machine each),
    compose service names, or consecutive ports on one host."""
    if explicit:
        if len(explicit) != num_peers:
            raise ConfigError(f"config error: --addresses lists {len(explicit)} addresses for {num_peers} peers")
        for address in explicit:
            host_part, _, port = address.rpartition(":")
            if not host_part or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"config error: --addresses: {address!r} is not host:port")
        return list(explicit)
    if compose:  # one container per peer, each reachable by its service name
        return [f"peer-{k}:50051" for k in range(num_peers)]
    return [f"{host}:{base_port + k}" for k in range(num_peers)]


def run_document(cfg: RunConfig, byzantine_ids: Sequence[int] = (), attack: str = MAIN_JOB_ATTACK,
                 attack_params: Mapping[str, Any] | None = None, network: Mapping[str, Any] | None = None,
                 adversary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run file's content without its roster: what decides how the run behaves.

    Kept apart from `init_run` so a caller can tell whether an existing run directory
    was made from the same inputs (the roster's keys are fresh on every init).
    `adversary` adds further keys of the [adversary] table (e.g. misbehaviour).
    """
    data = cfg.to_dict(explicit=True)
    data.pop("attack")
    if not cfg.allow_beyond_tolerance:
        data.pop("allow_beyond_tolerance")
    data["policy"]["hidden"] = list(cfg.policy.hidden)
    document: dict[str, Any] = {**data, "network": dict(network or {})}
    if byzantine_ids:
        document["adversary"] = {"byzantine_ids": list(byzantine_ids), "attack": attack,
                                 "params": dict(attack_params or {}), **dict(adversary or {})}
    return document


def init_run(directory: Path, cfg: RunConfig, byzantine_ids: Sequence[int] = (), attack: str = MAIN_JOB_ATTACK,
             attack_params: Mapping[str, Any] | None = None, host: str = "127.0.0.1", base_port: int = 50100,
             compose: bool = False, network: Mapping[str, Any] | None = None, overwrite: bool = False,
             adversary: Mapping[str, Any] | None = None, addresses: Sequence[str] | None = None,
             tls: bool = False) -> Path:
    """Write run.toml and keys/<id>.key for a K-peer run (and with `tls`, a run CA and
    certificates in tls/ and the [tls] table); returns the run file's path."""
    directory = Path(directory)
    run_file = directory / "run.toml"
    if run_file.exists() and not overwrite:
        raise ConfigError(f"config error: {run_file} exists; pass --force to replace it and its keys")
    addresses = roster_addresses(cfg.num_peers, host, base_port, compose, addresses)
    keys_dir = directory / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    peers = []
    for k in range(cfg.num_peers):
        public = generate_key(keys_dir / f"{k}.key", overwrite=overwrite)
        peers.append({"id": k, "address": addresses[k], "public_key": public})
    document = run_document(cfg, byzantine_ids, attack, attack_params, network, adversary)
    if tls:
        make_certificates(directory / "tls", [(p["id"], p["address"]) for p in peers], overwrite=overwrite)
        document["tls"] = tls_table(directory / "tls", directory)
    # the roster sits between [network] and [adversary], as users read it
    adversary = document.pop("adversary", None)
    document["peers"] = peers
    if adversary is not None:
        document["adversary"] = adversary
    header = ("# DecByzPG run file: every peer of the run gets this same file.\n"
              "# num_byzantine is the bound f that honest peers assume; nothing here says who is Byzantine\n"
              "# except the [adversary] table, which only Byzantine daemons read.\n")
    atomic_write(run_file, header + tomli_w.dumps(toml_safe(document)), mode=0o644)  # public: every peer gets it
    return run_file


# ---------------------------------------------------------------- merging


def merge_peer_logs(peer_dirs: Mapping[int, Path], cfg: RunConfig, out: Path, wall_seconds: float,
                    interrupted: bool, attack: str | None = None) -> dict[str, Any]:
    """Combine honest peers' metrics into the engine's results directory format."""
    logs = {k: read_metrics(d / "metrics.csv") for k, d in peer_dirs.items() if (d / "metrics.csv").exists()}
    writer = ResultsWriter(out, cfg)
    common = min((len(rows) for rows in logs.values()), default=0)
    for i in range(common):
        writer.add(merge_iteration([logs[k][i] for k in sorted(logs)]))
    summary = summarize(cfg, writer.rows, wall_seconds, target_return(cfg.env),
                        interrupted=interrupted)
    summary.update(network_summary(logs))
    if attack is not None:
        summary["attack"] = attack  # the run file's config knows only the bound f, not the attack
    writer.finish(summary)
    if writer.rows:
        from peer.lab.plots import plot_run

        plot_run(writer.rows, cfg.num_peers, out / "returns.png",
                 f"{cfg.algorithm} over gRPC, K={cfg.num_peers}, seed {cfg.seed}")
    return summary


def peer_result_dirs(results: Path, peer_id: int) -> tuple[Path, Path]:
    """Where a peer's results may be under `results`: compose's `peer-<id>/` or cluster's `peers/<id>/`."""
    return results / f"peer-{peer_id}", results / "peers" / str(peer_id)


def wait_for_peers(results: Path, run_file: Path | None = None, poll: float = 5.0,
                   timeout: float | None = None) -> None:
    """Block until every honest peer under `results` has written the run's last iteration.

    Lets a merge step start with the peers (compose's `merge` service) rather than after them:
    a service that depends on others' completion would make `docker compose up -d` block for
    the whole run.
    """
    from peer.engine.schedule import Schedule
    from peer.net.runfile import load_run_file

    results = Path(results)
    path = run_file or results / "run" / "run.toml"
    end = None if timeout is None else time.monotonic() + timeout
    while not path.exists():
        if end is not None and time.monotonic() > end:
            raise RunStateError(f"no run file at {path}")
        time.sleep(poll)
    run = load_run_file(path)
    total = Schedule.of(run.config).iteration_count
    honest = [p.id for p in run.peers if p.id not in set(run.adversary.get("byzantine_ids", []))]
    while True:
        done = []
        for k in honest:
            for directory in peer_result_dirs(results, k):
                try:
                    if len(read_metrics(directory / "metrics.csv")) >= total:
                        done.append(k)
                        break
                except (OSError, KeyError, ValueError):  # not there yet, or being replaced
                    continue
        if len(done) == len(honest):
            return
        if end is not None and time.monotonic() > end:
            raise RunStateError(f"honest peers {sorted(set(honest) - set(done))} did not finish within {timeout:g} s")
        time.sleep(poll)


def merge_results(results: Path, run_file: Path | None = None, out: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Merge the honest daemons' results under `results` (one directory per peer, `peer-<id>` as
    compose writes them or `peers/<id>` as `cluster` does) into one results directory.

    The honest ids are the roster's minus the run file's [adversary] ids; the run file
    defaults to `results/run/run.toml` (where compose's init copies it).
    """
    from peer.net.runfile import load_run_file

    results = Path(results)
    run = load_run_file(run_file or results / "run" / "run.toml")
    byzantine = set(run.adversary.get("byzantine_ids", []))
    dirs: dict[int, Path] = {}
    for entry in run.peers:
        if entry.id in byzantine:
            continue
        found = [d for d in peer_result_dirs(results, entry.id) if (d / "metrics.csv").exists()]
        if not found:
            raise RunStateError(f"no metrics.csv for honest peer {entry.id} under {results} "
                                f"(looked for peer-{entry.id}/ and peers/{entry.id}/)")
        dirs[entry.id] = found[0]
    out = Path(out) if out is not None else results / "merged"
    logs = {k: read_metrics(d / "metrics.csv") for k, d in dirs.items()}
    wall = max((rows[-1].elapsed_seconds for rows in logs.values() if rows), default=0.0)
    attack = run.adversary.get("attack") if byzantine else "none"
    return out, merge_peer_logs(dirs, run.config, out, wall, interrupted=False, attack=attack)


def merge_iteration(rows: Sequence[IterationMetrics]) -> IterationMetrics:
    """One iteration of several honest daemons' files as one record covering all of them.

    The honest diameter stays unknown (NaN): no daemon sees the others' parameters.
    """
    lead = rows[0]
    diameters = [r.agreement_diameter for r in rows if math.isfinite(r.agreement_diameter)]
    latencies = [r.round_p50_ms for r in rows if math.isfinite(r.round_p50_ms)]
    maxima = [r.round_max_ms for r in rows if math.isfinite(r.round_max_ms)]
    return IterationMetrics(
        iteration=lead.iteration, trajectories_per_agent=lead.trajectories_per_agent, x_t=lead.x_t,
        peer_returns={k: v for r in rows for k, v in r.peer_returns.items()},
        agreement_diameter=max(diameters) if diameters else math.nan,
        agreement_fallbacks=sum(r.agreement_fallbacks for r in rows),
        gradient_received=min(r.gradient_received for r in rows),
        env_steps=sum(r.env_steps for r in rows), rounds=lead.rounds,
        rounds_timed_out=sum(r.rounds_timed_out for r in rows),
        round_p50_ms=statistics.median(latencies) if latencies else math.nan,
        round_max_ms=max(maxima) if maxima else math.nan,
        rejected=sum(r.rejected for r in rows),
        equivocators=" ".join(sorted({e for r in rows for e in r.equivocators.split()}, key=int)),
        comm_seconds=max(r.comm_seconds for r in rows), crypto_seconds=sum(r.crypto_seconds for r in rows),
        compute_seconds=sum(r.compute_seconds for r in rows), seconds=max(r.seconds for r in rows),
        elapsed_seconds=max(r.elapsed_seconds for r in rows),
    )


def network_summary(logs: Mapping[int, list[IterationMetrics]]) -> dict[str, Any]:
    """Agreement-round latency percentiles and where the honest peers' time went.

    Agreement rounds follow each other with almost no computation in between, so their
    latency is mostly the protocol's own cost (signing, sending, verifying, scheduling).  The
    first agreement round of a small-batch iteration also waits for the slowest peer's
    sampling (no exchange precedes it); `later_round_latency_*` counts only rounds r >= 1,
    between which there is nothing but the protocol and the agreement rule.  Gradient
    rounds also include waiting for the slowest peer to finish sampling; that wait is
    reported apart as `synchronisation_share`.  `communication_share` charges every round
    (gradient rounds included) the median agreement-round latency, plus all agreement time.
    """
    agreement, gradient_waits, crypto, total, rounds, timed_out = [], 0.0, 0.0, 0.0, 0, 0
    later: list[float] = []  # agreement rounds r >= 1: nothing but the protocol between them
    for rows in logs.values():
        for r in rows:
            for item in r.round_ms.split():
                kind, value = item.split(":")
                ms = float(value)
                rounds += 1
                if kind.startswith("a"):
                    agreement.append(ms)
                    if kind != "a0":
                        later.append(ms)
                else:
                    gradient_waits += ms / 1e3
            crypto += r.crypto_seconds
            total += r.seconds
            timed_out += r.rounds_timed_out
    agreement.sort()
    later.sort()

    def pct(p: float, values: list[float] = agreement) -> float | None:
        return values[min(len(values) - 1, int(p * len(values)))] if values else None

    p50 = pct(0.5) or 0.0
    non_agreement = rounds - len(agreement)
    communication = sum(agreement) / 1e3 + non_agreement * p50 / 1e3
    return {"round_latency_ms_p50": pct(0.5), "round_latency_ms_p99": pct(0.99),
            "later_round_latency_ms_p50": pct(0.5, later), "later_round_latency_ms_p99": pct(0.99, later),
            "communication_share": communication / total if total else None,
            "synchronisation_share": max(0.0, gradient_waits - non_agreement * p50 / 1e3) / total if total else None,
            "crypto_share": crypto / total if total else None, "rounds_timed_out": timed_out}


# ---------------------------------------------------------------- launching


class Cluster:
    """K daemon processes on this machine, started from one run directory."""

    def __init__(self, run_dir: Path, out: Path, python: str = sys.executable) -> None:
        from peer.net.runfile import load_run_file

        self.run_dir = Path(run_dir)
        self.run = load_run_file(self.run_dir / "run.toml")
        self.out = Path(out)
        self.python = python
        self.byzantine = set(self.run.adversary.get("byzantine_ids", []))
        self.procs: dict[int, subprocess.Popen] = {}

    def peer_dir(self, k: int) -> Path:
        return self.out / "peers" / str(k)

    def command(self, k: int) -> list[str]:
        role = "adversary" if k in self.byzantine else "peer"
        return [self.python, "-m", "peer.cli.main", role, "--config", str(self.run_dir / "run.toml"), "--id", str(k),
                "--key", str(self.run_dir / "keys" / f"{k}.key"), "--out", str(self.peer_dir(k))]

    def start(self, k: int) -> None:
        self.peer_dir(k).mkdir(parents=True, exist_ok=True)
        logfile = open(self.peer_dir(k) / "daemon.log", "ab")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.procs[k] = subprocess.Popen(self.command(k), stdout=logfile, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        logfile.close()

    def start_all(self) -> None:
        for k in range(self.run.config.num_peers):
            self.start(k)

    def kill(self, k: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(k)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait()

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def honest_ids(self) -> list[int]:
        return [k for k in range(self.run.config.num_peers) if k not in self.byzantine]

    def progress(self) -> dict[str, Any]:
        """The latest iteration every running honest peer has finished, from their logs."""
        logs = {}
        for k in self.honest_ids():
            path = self.peer_dir(k) / "metrics.csv"
            if path.exists():
                try:
                    logs[k] = read_metrics(path)
                except (OSError, csv.Error, KeyError, ValueError):  # a file from before a restart's rewrite
                    continue
        alive = [k for k in self.honest_ids() if self.procs.get(k) and self.procs[k].poll() is None]
        counted = [k for k in alive if k in logs] or list(logs)
        if not counted or not all(logs[k] for k in counted):
            return {"iteration": -1, "trajectories": 0, "return": math.nan, "latency_ms": math.nan}
        i = min(len(logs[k]) for k in counted) - 1
        rows = [logs[k][i] for k in counted]
        merged = merge_iteration(rows)
        return {"iteration": merged.iteration, "trajectories": merged.trajectories_per_agent,
                "return": merged.honest_mean_return, "latency_ms": merged.round_p50_ms}

    def running(self) -> list[int]:
        return [k for k, p in self.procs.items() if p.poll() is None]

    def failed(self) -> dict[int, int]:
        return {k: p.returncode for k, p in self.procs.items() if p.poll() not in (None, 0)}

    def merge(self, wall_seconds: float, interrupted: bool) -> dict[str, Any]:
        dirs = {k: self.peer_dir(k) for k in self.honest_ids()}
        attack = self.run.adversary.get("attack", "none") if self.byzantine else "none"
        return merge_peer_logs(dirs, self.run.config, self.out, wall_seconds, interrupted, attack)


def cluster_config(num_peers: int, num_byzantine: int, overrides: Mapping[str, Any]) -> RunConfig:
    data = {**overrides, "num_peers": num_peers, "num_byzantine": num_byzantine}
    return build_config(data, in_process=False)
