"""The f Byzantine peers of an in-process run, acting as one colluding adversary.

Each round the driver shows the coalition every honest vector (a rushing, omniscient
adversary) and delivers whatever the coalition's attack returns.  For attacks that follow
the protocol with corrupted data (RandomAction), each Byzantine peer runs the honest state
machine with a corrupted behaviour policy (its "shadow"), advanced in lockstep with the
honest peers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from adversary.attacks import Attack, Messages, RoundView, make_attack
from peer.engine import randomness
from peer.engine.config import RunConfig
from peer.engine.exchange import Broadcast
from peer.engine.sampling import uniform_random_actions
from peer.engine.schedule import RoundKey
from peer.engine.state_machine import PeerStateMachine


class Coalition:
    def __init__(self, cfg: RunConfig, genesis_hash: bytes, attack: Attack | None = None) -> None:
        self.cfg = cfg
        self.genesis_hash = genesis_hash
        self.ids = cfg.byzantine_ids
        self.attack = attack or (make_attack(cfg.attack.name, cfg.attack.params) if self.ids else None)
        self.shadows: dict[int, PeerStateMachine] = {}
        if self.attack is not None and self.attack.needs_shadow:
            for b in self.ids:
                machine = PeerStateMachine(cfg, b, genesis_hash)
                machine.behaviour = uniform_random_actions(machine.sampler.action_space)
                self.shadows[b] = machine
        self._programs: dict = {}
        self._pending: dict[int, Broadcast] = {}

    def begin_iteration(self) -> None:
        self._programs, self._pending = {}, {}
        for b, machine in self.shadows.items():
            program = machine.iteration()
            try:
                self._pending[b] = next(program)
                self._programs[b] = program
            except StopIteration:
                pass

    def round(self, round_key: RoundKey, honest: Mapping[int, np.ndarray], receivers: Sequence[int]) -> Messages:
        """Messages for one round; advances the shadows past it."""
        own = {}
        for b, out in self._pending.items():
            if out.round_key != round_key:
                raise RuntimeError(f"Byzantine shadow {b} is at {out.round_key}, the honest peers at {round_key}")
            if out.vector is not None:
                own[b] = out.vector
        rng = randomness.stream(self.genesis_hash, "attack", round_key.iteration, int(round_key.phase), round_key.round)
        view = RoundView(round_key, honest, receivers, self.ids, own, rng)
        messages = self.attack.messages(view) if self.attack is not None else {}
        for b, program in list(self._programs.items()):
            received = {**honest, **{o: v for o, v in own.items() if o != b}}
            try:
                self._pending[b] = program.send(received)
            except StopIteration:
                del self._programs[b], self._pending[b]
        return messages

    def state_dict(self) -> dict[str, Any]:
        """The shadows' state machines and the attack's memory, between iterations."""
        return {"shadows": {b: machine.state_dict() for b, machine in self.shadows.items()},
                "attack": self.attack.state_dict() if self.attack is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for b, machine in self.shadows.items():
            machine.load_state_dict(state["shadows"][b])
        if self.attack is not None:
            self.attack.load_state_dict(state["attack"])

    def end_iteration(self) -> None:
        if self._programs:
            raise RuntimeError("Byzantine shadows did not finish with the honest peers")
