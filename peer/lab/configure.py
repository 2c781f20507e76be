"""The configuration of an in-process run: the engine's validation plus the adversary's.

The engine does not know which attacks exist, so an in-process configuration (where the
Byzantine peers are simulated) is complete only once its attack has been checked too.
Every lab entry point resolves configurations here, before it creates any file.
"""

from __future__ import annotations

from typing import Any, Mapping

from adversary.attacks import check_attack
from peer.engine.config import RunConfig, build_config
from peer.engine.errors import ConfigError


def resolve_config(data: Mapping[str, Any]) -> RunConfig:
    """Validate a run file's mapping (TOML layout) into a RunConfig, attack included.

    A daemon's run file (with a [[peers]] roster) is accepted too: the same run, simulated
    in one process (`engine_data`).
    """
    if "peers" in data:
        data = engine_data(data)
    return check_attack(build_config(data))


def engine_data(run_file: Mapping[str, Any]) -> dict[str, Any]:
    """A daemon run file as the in-process engine reads it: the learning configuration, with the
    [adversary] table's attack as [attack]; the roster and network settings have no role in process.

    The engine makes the last f ids Byzantine, so the run file's Byzantine ids must be those.
    """
    data = {k: v for k, v in run_file.items() if k not in ("peers", "network", "adversary")}
    adversary = run_file.get("adversary") or {}
    if not isinstance(adversary, Mapping):
        raise ConfigError(f"config error: adversary must be a table (got {adversary!r})")
    ids = list(adversary.get("byzantine_ids", []))
    peers = data.get("num_peers", RunConfig.num_peers)
    bound = data.get("num_byzantine", RunConfig.num_byzantine)
    if len(ids) != bound or ids != list(range(peers - len(ids), peers)):
        # in process, f is both the bound the honest peers assume and the number that lie
        raise ConfigError(f"config error: in process the Byzantine peers are the last num_byzantine = {bound} ids "
                          f"({list(range(peers - bound, peers))}); this run file's adversary.byzantine_ids are {ids}")
    if ids:
        data["attack"] = {"name": adversary.get("attack", ""), "params": dict(adversary.get("params", {}))}
    return data

# The main job the user asked for (README, `make run`, `decbyzpg run`, `cluster`, `init`,
# `bench`): 13 peers of which 3 run AvgZero.  Written once; every default points here.
MAIN_JOB_PEERS = 13
MAIN_JOB_BYZANTINE = 3
MAIN_JOB_ATTACK = "avg_zero"
