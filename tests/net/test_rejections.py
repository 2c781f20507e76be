"""peer.net.rejections: counts every outcome, rate-limits the log, bounded tables."""

from __future__ import annotations

import logging

import pytest

from peer.net.rejections import RejectionLog
from peer.net.wire import Verdict
from tests.support.wire_fixtures import RR

# --------------------------------------------------------------------------- rejection log


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "peer.net.rejections"]


def test_rejection_log_rate_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="peer.net.rejections")
    clock = FakeClock()
    rl = RejectionLog(interval=10.0, clock=clock)
    for _ in range(100):
        rl.record(RR.REJECT_REASON_BAD_SIGNATURE, 3, origin="ipv4:10.0.0.3:5000")
    assert rl.counts() == {"BAD_SIGNATURE": 100}
    lines = _lines(caplog)
    assert len(lines) == 1
    assert "sender 3" in lines[0] and "BAD_SIGNATURE" in lines[0] and "10.0.0.3" in lines[0]
    assert caplog.records[0].levelno == logging.WARNING

    clock.now += 9.9
    rl.record(RR.REJECT_REASON_BAD_SIGNATURE, 3)
    assert len(_lines(caplog)) == 1
    clock.now += 0.2
    rl.record(RR.REJECT_REASON_BAD_SIGNATURE, 3)
    lines = _lines(caplog)
    assert len(lines) == 2 and "100 more like it suppressed" in lines[1]

    rl.record(RR.REJECT_REASON_BAD_SIGNATURE, 4)  # another sender: its own budget
    rl.record(RR.REJECT_REASON_STALE, 3)  # another reason: its own budget
    assert len(_lines(caplog)) == 4
    assert rl.counts() == {"BAD_SIGNATURE": 103, "STALE": 1}


def test_rejection_log_unknown_senders_share_one_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peer.net.rejections")
    rl = RejectionLog(clock=FakeClock())
    for sender in range(10_000, 12_000):
        rl.record(RR.REJECT_REASON_UNKNOWN_SENDER, sender)
        rl.record(RR.REJECT_REASON_MALFORMED, None)
    assert len(_lines(caplog)) == 2
    assert rl.counts() == {"UNKNOWN_SENDER": 2000, "MALFORMED": 2000}


def test_rejection_log_table_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peer.net.rejections")
    rl = RejectionLog(clock=FakeClock(), max_keys=4)
    for sender in range(100):
        rl.record(RR.REJECT_REASON_BAD_SIGNATURE, sender)
    assert len(_lines(caplog)) == 5  # 4 tracked pairs + the shared overflow slot
    assert rl.tracked_slots == 5


def test_rejection_log_flush_and_accepted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="peer.net.rejections")
    rl = RejectionLog(clock=FakeClock())
    for _ in range(5):
        rl.record(RR.REJECT_REASON_NON_FINITE, 2)
        rl.record(RR.REJECT_REASON_UNSPECIFIED, 2)
    assert rl.accepted() == 5 and rl.counts() == {"NON_FINITE": 5}
    caplog.clear()
    rl.flush()
    assert _lines(caplog) == ["rejected 4 more message(s) from sender 2: NON_FINITE"]
    caplog.clear()
    rl.flush()
    assert _lines(caplog) == []


def test_rejection_log_duplicates_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="peer.net.rejections")
    rl = RejectionLog(clock=FakeClock())
    rl.record_verdict(Verdict(RR.REJECT_REASON_DUPLICATE, 1))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert rl.counts() == {"DUPLICATE": 1}
