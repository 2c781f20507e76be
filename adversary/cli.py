"""Entry point of `decbyzpg adversary`: pick the attack, then run the right daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from adversary.attacks import make_attack
from peer.config import ConfigError, parse_override
from peer.runfile import RunFile


def attack_settings(run: RunFile, peer_id: int, name: str | None,
                    overrides: Sequence[str]) -> tuple[str, dict[str, Any], list[int]]:
    """Attack name, parameters and the coalition's ids, from the [adversary] table and flags."""
    table = run.adversary
    name = name or table.get("attack")
    if not name:
        raise ConfigError("config error: no attack given: pass --attack or set [adversary].attack in the run file")
    params = dict(table.get("params", {})) if (name == table.get("attack")) else {}
    for text in overrides:
        path, value = parse_override(text)
        params[".".join(path)] = value
    ids = table.get("byzantine_ids", [peer_id])
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ConfigError(f"config error: adversary.byzantine_ids must be a list of peer ids (got {ids!r})")
    if peer_id not in ids:
        ids = sorted({*ids, peer_id})
    return name, params, sorted(ids)


def run_adversary(run: RunFile, peer_id: int, private_key: Any, out: Path, name: str | None,
                  overrides: Sequence[str], bind: str | None) -> int:
    import signal

    name, params, ids = attack_settings(run, peer_id, name, overrides)
    attack = make_attack(name, params)
    if attack.needs_shadow:  # protocol-following with corrupted sampling: the honest daemon, lying
        from peer.daemon import PeerDaemon
        from peer.sampling import Sampler, uniform_random_actions

        probe = Sampler(run.config.env, run.config.estimator.horizon)
        behaviour = uniform_random_actions(probe.action_space)
        probe.close()
        daemon = PeerDaemon(run, peer_id, private_key, out, behaviour=behaviour)
        daemon.install_signal_handlers()
        return daemon.serve(bind=bind)
    from adversary.daemon import ByzantineDaemon

    byzantine = ByzantineDaemon(run, peer_id, private_key, attack, ids, out, options=run.adversary)
    signal.signal(signal.SIGTERM, byzantine.request_stop)
    signal.signal(signal.SIGINT, byzantine.request_stop)
    return byzantine.serve(bind=bind)
