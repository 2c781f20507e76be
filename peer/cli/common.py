"""What every command group shares: flag parsers, the config flags, output naming, the summary table.

Nothing here imports torch, so `decbyzpg --help` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path
from typing import Any, Mapping, Sequence

from peer.engine.config import apply_override, load_toml, parse_override
from peer.engine.errors import ConfigError

DEFAULT_RESULTS = Path("results")


def seeds(text: str) -> list[int]:
    """'0-4' or '0,2,7' -> list of seeds."""
    try:
        out: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                out += list(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-4 or 0,2,7 (got {text!r})") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers (got {text!r})")
    return out


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="run file (TOML); flags below override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set estimator.switch_prob=0.3 (repeatable)")
    p.add_argument("--env", help="any gymnasium id with a flat Box observation and a Discrete or Box action "
                                 "space; the paper's presets for CartPole-v1, LunarLander-v3, Pendulum-v1, "
                                 "LunarLanderContinuous-v3 (docs/ALGORITHM.md)")
    p.add_argument("--algorithm", help="decbyzpg, dec-page-pg, byzpg or page-pg")
    p.add_argument("--preset", help="tuned (default: baseline, per-decision weights, drift clip, forced large "
                                    "batches, v aggregated every iteration; docs/TUNING.md) or paper (the paper's "
                                    "estimator and Algorithm 2's local small-batch steps)")
    p.add_argument("--trajectories", type=int, metavar="N", help="budget: trajectories per agent")
    p.add_argument("--allow-beyond-tolerance", action="store_true",
                   help="run even if there are more Byzantines than the algorithm tolerates")


def config_data(args: argparse.Namespace, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run file's mapping with the config flags, `extra` (dotted keys) and every --set applied."""
    if args.trajectories is not None and args.trajectories < 1:
        raise ConfigError(f"--trajectories must be >= 1 (got {args.trajectories})")
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    flags = {"env": args.env, "algorithm": args.algorithm, "preset": args.preset,
             "trajectories_per_agent": args.trajectories, **extra}
    for dotted, value in flags.items():
        if value is not None:
            data = apply_override(data, dotted.split("."), value)
    if args.allow_beyond_tolerance:
        data["allow_beyond_tolerance"] = True
    for text in args.set:
        path, value = parse_override(text)
        data = apply_override(data, path, value)
    return data


def output_dir(explicit: str | None, label: str) -> Path:
    """`explicit`, or results/<time>-<label> (one naming scheme for every command)."""
    if explicit:
        return Path(explicit)
    return DEFAULT_RESULTS / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{label}")


def target_label(summary: Mapping[str, Any]) -> str:
    """`trajectories_to_<target>` named by the environment's own threshold (475 for CartPole-v1)."""
    target = summary.get("target_return")
    return "trajectories_to_target" if target is None else f"trajectories_to_{target:g}"


def print_summary(title: str, summary: Mapping[str, Any], keys: Sequence[str]) -> None:
    """The summary table every run-like command ends with; `trajectories_to_target` is renamed by target."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for name in keys:
        value = summary.get(name)
        label = target_label(summary) if name == "trajectories_to_target" else name
        table.add_row(label, "never" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value)))
    Console().print(table)
