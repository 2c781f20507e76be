"""A Byzantine peer as a real daemon: same roster entry, keys, protocol and commands.

By default it is a rushing adversary: for every round it first waits (until the round's
deadline) for the vectors of all honest peers, which honest peers broadcast identically to
every peer.  The Byzantine daemons collude through a side channel made of the protocol's
own Pull RPC: each also pulls the round from its fellow Byzantines, so a Byzantine that
missed an honest message still learns it (the envelopes are signed by the honest sender,
so colluders cannot lie to each other about them either).  It then runs the same `Attack`
as the in-process coalition, with the same per-round random stream, computes the messages
of the whole coalition and sends its own share.  Given the same honest vectors the
network run therefore reproduces the in-process run exactly.

Run-file options (`[adversary]`, never read by honest peers):
  attack, params          the learning attack (adversary.attacks)
  byzantine_ids           the coalition (it knows who is honest from this)
  rushing = true          wait for the honest vectors first; false: send at once with
                          whatever has arrived
  misbehaviour = [...]    protocol-level junk (adversary.misbehaviour), or "all"
  misbehaviour_every = 1  every n-th round

Attacks that follow the protocol with corrupted data (random_action) run the honest
daemon with a corrupted behaviour policy instead (see `peer.cli.daemons.run_adversary`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from adversary.attacks import Attack, RoundView
from adversary.misbehaviour import Misbehaviour
from peer.engine import randomness
from peer.engine.errors import ConfigError, ExitCode
from peer.engine.policy import build_policy, get_flat
from peer.engine.sampling import Sampler
from peer.engine.schedule import Schedule
from peer.net import wire
from peer.net.files import atomic_write
from peer.net.runfile import RunFile
from peer.net.transport import Interrupted, PeerTransport
from peer.net.usage import ProcessUsage

log = logging.getLogger("decbyzpg.adversary")


def model_dimension(run: RunFile) -> int:
    sampler = Sampler(run.config.env, run.config.estimator.horizon)
    try:
        policy = build_policy(run.config.policy, sampler.observation_space, sampler.action_space, 0)
        return int(get_flat(policy).numel())
    finally:
        sampler.close()


class ByzantineDaemon:
    def __init__(self, run: RunFile, peer_id: int, signing_key: Any, attack: Attack,
                 byzantine_ids: Sequence[int], out_dir: Path, options: Mapping[str, Any] | None = None) -> None:
        if peer_id not in byzantine_ids:
            raise ConfigError(f"config error: peer {peer_id} is not among the Byzantine ids {list(byzantine_ids)}")
        options = dict(options or {})
        self.run = run
        self.cfg = run.config
        self.peer_id = peer_id
        self.signing_key = signing_key
        self.attack = attack
        self.byzantine_ids = tuple(sorted(byzantine_ids))
        self.honest_ids = tuple(p.id for p in run.peers if p.id not in self.byzantine_ids)
        self.genesis_hash = self.cfg.genesis_hash()
        self.schedule = Schedule.of(self.cfg, self.genesis_hash)
        self.dim = model_dimension(run)
        self.transport = PeerTransport(run, peer_id, signing_key, self.dim)
        self.usage = ProcessUsage()
        self.out_dir = Path(out_dir)
        self.rushing = bool(options.get("rushing", True))
        self.misbehaviour = Misbehaviour.from_table(options)
        self.junk_replies: Counter[str] = Counter()
        self._junk_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="junk")
        self.stop_requested = threading.Event()
        self.stop_signal: int | None = None

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Stop at once, even while waiting inside a round."""
        self.stop_signal = signum
        self.stop_requested.set()
        self.transport.interrupted.set()

    def _stopped(self) -> int:
        return ExitCode.stopped_by(self.stop_signal)

    def play_round(self, round_key) -> None:
        deadline = self.transport.deadline()
        # ByzPG's model round carries only the server's parameters: wait for nobody else.
        senders = set(self.schedule.senders(round_key)) & set(self.honest_ids)
        if self.rushing:  # wait for every honest vector before lying
            colluders = set(self.byzantine_ids) - {self.peer_id}
            honest, _ = self.transport.collect(round_key, deadline, expected=senders, quorum=len(senders),
                                               also_pull=colluders)
        else:
            honest = {s: v for s, v in self.transport.store.vectors(round_key).items() if s in senders}
        rng = randomness.stream(self.genesis_hash, "attack", round_key.iteration, int(round_key.phase), round_key.round)
        view = RoundView(round_key, honest, list(self.honest_ids), self.byzantine_ids, {}, rng)
        late = getattr(self.attack, "wire_messages", None)
        messages = late(view) if late is not None else self.attack.messages(view)
        delay = float(getattr(self.attack, "delay", 0.0)) if late is not None else 0.0
        mine = messages.get(self.peer_id, {})
        if delay > 0:
            self._junk_pool.submit(self._send_later, round_key, mine, deadline + delay, delay)
        else:
            self.transport.send(round_key, mine, deadline)
        with self.transport.own_lock:
            own = self.transport.own.get(round_key)
        if own is not None:
            self.misbehaviour.remember(round_key, own)
        if self.misbehaviour.due():
            self._misbehave(round_key)

    def _send_later(self, round_key, mine, deadline: float, delay: float) -> None:
        if not self.stop_requested.wait(delay):
            self.transport.send(round_key, mine, deadline)

    def _misbehave(self, round_key) -> None:
        rng = randomness.stream(self.genesis_hash, "misbehaviour", self.peer_id, round_key.iteration, int(round_key.phase), round_key.round)
        for victim in self.honest_ids:
            for kind, raw in self.misbehaviour.messages(self.signing_key, self.run.run_id, round_key, self.peer_id,
                                                        self.dim, victim, self.run.network.max_message_bytes, rng):
                self._junk_pool.submit(self._push_junk, victim, kind, raw)

    def _push_junk(self, victim: int, kind: str, raw: bytes) -> None:
        reason = self.transport.push_raw(victim, raw)
        self.junk_replies[f"{kind}->{'unreachable' if reason is None else wire.reason_name(reason)}"] += 1

    def write_report(self) -> None:
        atomic_write(self.out_dir / "adversary.json", json.dumps({
            "peer_id": self.peer_id, "attack": self.attack.name, "byzantine_ids": list(self.byzantine_ids),
            "misbehaviour": list(self.misbehaviour.kinds), "replies": dict(sorted(self.junk_replies.items())),
            "usage": self.usage.snapshot(self.transport),
        }, indent=2) + "\n")

    @property
    def progress_path(self) -> Path:
        return self.out_dir / "progress.json"

    def resume_at(self) -> int:
        """The first iteration not yet played (from progress.json, if it belongs to this run and peer).

        The attack's randomness is keyed by the round, so a restarted Byzantine daemon picks up
        where it stopped instead of replaying every round from 0 (and, after a finished run,
        waiting out every round's deadline for honest peers that have gone).
        """
        try:
            progress = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            return 0
        if progress.get("run_id") != self.run.run_id.hex() or progress.get("peer_id") != self.peer_id:
            return 0
        return int(progress.get("next_iteration", 0))

    def serve(self, bind: str | None = None, linger: float | None = None) -> int:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        total = self.schedule.iteration_count
        start = min(self.resume_at(), total)
        self.usage.mark_started()
        self.transport.start(bind)
        log.info("Byzantine peer %d (%s) serving; %d iterations, starting at %d", self.peer_id, self.attack.name,
                 total, start)
        try:
            for t in range(start, total):
                self.transport.set_iteration(t)
                for round_key in self.schedule.rounds(t):
                    if self.stop_requested.is_set():
                        return self._stopped()
                    self.play_round(round_key)
                atomic_write(self.progress_path, json.dumps({"run_id": self.run.run_id.hex(), "peer_id": self.peer_id,
                                                             "next_iteration": t + 1}) + "\n", durable=False)
                if t % 10 == 0:
                    self.write_report()
                    log.info("iteration %d/%d played (%s)", t + 1, total, self.attack.name)
            self.transport.finished = True
            self.transport.linger(self.run.network.linger if linger is None else linger, self.stop_requested)
            return ExitCode.SUCCESS
        except Interrupted:
            return self._stopped()
        finally:
            self._junk_pool.shutdown(wait=True, cancel_futures=True)
            self.write_report()
            # stopped by a signal: in-flight calls get a short grace, the orchestrator is waiting
            self.transport.stop(grace=0.2 if self.stop_requested.is_set() else 1.0)
