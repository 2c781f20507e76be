"""The configuration of an in-process run: the engine's validation plus the adversary's.

The engine does not know which attacks exist, so an in-process configuration (where the
Byzantine peers are simulated) is complete only once its attack has been checked too.
Every lab entry point resolves configurations here, before it creates any file.
"""

from __future__ import annotations

from typing import Any, Mapping

from adversary.attacks import check_attack
from peer.engine.config import RunConfig, build_config


def resolve_config(data: Mapping[str, Any]) -> RunConfig:
    """Validate a run file's mapping (TOML layout) into a RunConfig, attack included."""
    return check_attack(build_config(data))

# The main job the user asked for (README, `make run`, `decbyzpg run`, `cluster`, `init`,
# `bench`): 13 peers of which 3 run AvgZero.  Written once; every default points here.
MAIN_JOB_PEERS = 13
MAIN_JOB_BYZANTINE = 3
MAIN_JOB_ATTACK = "avg_zero"
