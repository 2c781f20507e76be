"""A Byzantine peer as a real daemon: same roster entry, keys, protocol and commands.

It is a rushing adversary: for every round it first waits (until the round's deadline)
for the vectors of all honest peers, which honest peers broadcast identically to every
peer, so each Byzantine daemon sees the same honest vectors.  It then runs the same
`Attack` as the in-process coalition, with the same per-round random stream, computes
the messages of the whole coalition and sends its own share.  Given the same honest
vectors the network run therefore reproduces the in-process run exactly.

Attacks that follow the protocol with corrupted data (random_action) run the honest
daemon with a corrupted behaviour policy instead (see `adversary.cli`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence

from adversary.attacks import Attack, RoundView
from peer import randomness
from peer.policy import build_policy, get_flat
from peer.runfile import RunFile
from peer.sampling import Sampler
from peer.exchange import Phase
from peer.state_machine import SERVER_ID, iteration_count, round_keys
from peer.transport import PeerTransport

log = logging.getLogger("decbyzpg.adversary")


def model_dimension(run: RunFile) -> int:
    sampler = Sampler(run.config.env, run.config.estimator.horizon)
    try:
        policy = build_policy(run.config.policy, sampler.observation_space, sampler.action_space, 0)
        return int(get_flat(policy).numel())
    finally:
        sampler.close()


class ByzantineDaemon:
    def __init__(self, run: RunFile, peer_id: int, private_key: Any, attack: Attack,
                 byzantine_ids: Sequence[int], out_dir: Path) -> None:
        if peer_id not in byzantine_ids:
            raise ValueError(f"peer {peer_id} is not among the Byzantine ids {list(byzantine_ids)}")
        self.run = run
        self.cfg = run.config
        self.peer_id = peer_id
        self.attack = attack
        self.byzantine_ids = tuple(sorted(byzantine_ids))
        self.honest_ids = tuple(p.id for p in run.peers if p.id not in self.byzantine_ids)
        self.key = self.cfg.genesis_hash()
        self.transport = PeerTransport(run, peer_id, private_key, model_dimension(run))
        self.out_dir = Path(out_dir)
        self.stop_requested = threading.Event()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    def play_round(self, key) -> None:
        deadline = self.transport.deadline()
        # ByzPG's model round carries only the server's parameters: wait for nobody else.
        senders = {SERVER_ID} if key.phase == Phase.MODEL else set(self.honest_ids)
        honest, _ = self.transport.collect(key, deadline, expected=senders, quorum=len(senders))
        rng = randomness.stream(self.key, "attack", key.iteration, int(key.phase), key.round)
        view = RoundView(key, honest, list(self.honest_ids), self.byzantine_ids, {}, rng)
        messages = self.attack.messages(view)
        self.transport.send(key, messages.get(self.peer_id, {}), deadline)

    def serve(self, bind: str | None = None, linger: float | None = None) -> int:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        total = iteration_count(self.cfg, self.key)
        self.transport.start(bind)
        log.info("Byzantine peer %d (%s) serving; %d iterations", self.peer_id, self.attack.name, total)
        try:
            for t in range(total):
                self.transport.set_iteration(t)
                for key in round_keys(self.cfg, self.key, t):
                    if self.stop_requested.is_set():
                        return 130
                    self.play_round(key)
            self.transport.finished = True
            self.stop_requested.wait(self.run.network.linger if linger is None else linger)
            return 0
        finally:
            self.transport.stop()
