"""peer.engine.metrics: one record, one schema, read back exactly as written."""

from __future__ import annotations

import csv
import io
import math

from peer.engine.metrics import IterationMetrics, columns, from_csv_row, to_csv_row


def _round_trip(m: IterationMetrics, num_peers: int) -> IterationMetrics:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns(num_peers))
    writer.writerow(to_csv_row(m, num_peers))
    buffer.seek(0)
    return from_csv_row(next(csv.DictReader(buffer)))


def test_in_process_record_round_trips() -> None:
    m = IterationMetrics(iteration=3, trajectories_per_agent=104, x_t=1, peer_returns={0: 21.5, 2: 19.25},
                         honest_diameter=0.125, agreement_diameter=0.5, agreement_fallbacks=1, gradient_received=12,
                         env_steps=4000, rounds=4, compute_seconds=1.5, seconds=0.25, elapsed_seconds=3.0)
    back = _round_trip(m, 4)
    assert back.peer_returns == {0: 21.5, 2: 19.25} and back.honest_mean_return == 20.375
    assert back.honest_diameter == 0.125 and back.agreement_diameter == 0.5 and back.rounds == 4
    assert math.isnan(back.round_p50_ms)  # unknown in process: written empty, read as NaN


def test_daemon_record_round_trips_with_unknowns_empty() -> None:
    m = IterationMetrics(iteration=0, trajectories_per_agent=50, x_t=1, peer_returns={7: 30.0}, rounds=4,
                         round_p50_ms=12.5, round_max_ms=40.0, round_ms="g0:40.000 a0:12.500", rejected=3,
                         equivocators="11 12", crypto_seconds=0.01)
    row = dict(zip(columns(13), to_csv_row(m, 13)))
    assert row["honest_diameter"] == "" and row["return_0"] == "" and row["return_7"] == "30.0000"
    back = _round_trip(m, 13)
    assert math.isnan(back.honest_diameter) and back.equivocators == "11 12" and back.round_ms == m.round_ms


def test_schema_has_one_return_column_per_peer() -> None:
    header = columns(3)
    assert [c for c in header if c.startswith("return_")] == ["return_0", "return_1", "return_2"]
    assert len(header) == len(set(header))
