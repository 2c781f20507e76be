"""The common coin and per-peer streams."""

from __future__ import annotations

import numpy as np

from peer.engine import randomness


def test_coin_starts_with_a_large_batch_and_is_a_pure_function() -> None:
    key = b"k" * 32
    assert randomness.common_coin(key, 0, 0.0) is True
    draws = [randomness.common_coin(key, t, 0.2) for t in range(1, 5001)]
    assert draws == [randomness.common_coin(key, t, 0.2) for t in range(1, 5001)]  # any peer, any order
    assert 0.18 < np.mean(draws) < 0.22
    other = [randomness.common_coin(b"j" * 32, t, 0.2) for t in range(1, 5001)]
    assert draws != other


def test_coin_extremes() -> None:
    key = b"x" * 32
    assert not any(randomness.common_coin(key, t, 0.0) for t in range(1, 200))
    assert all(randomness.common_coin(key, t, 1.0) for t in range(1, 200))


def test_streams_are_reproducible_and_independent() -> None:
    key = b"s" * 32
    a = randomness.stream(key, "sample", 3, 7).random(5)
    b = randomness.stream(key, "sample", 3, 7).random(5)
    c = randomness.stream(key, "sample", 4, 7).random(5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert randomness.torch_seed(key, "theta0") == randomness.torch_seed(key, "theta0")
    assert 0 <= randomness.uniform(key, "u") < 1
