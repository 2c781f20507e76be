"""Attacks: each does what its name says, to the peers it says, in the phases it says."""

from __future__ import annotations

import numpy as np
import pytest

from adversary.attacks import ATTACKS, RoundView, make_attack
from peer.engine.schedule import Phase, RoundKey

HONEST = {k: np.random.default_rng(k).normal(1.0, 0.1, 20).astype(np.float32) for k in range(10)}
BYZ = (10, 11, 12)
GRAD = RoundKey(4, Phase.GRADIENT)
AGREE = RoundKey(4, Phase.AGREEMENT, 1)


def view(key: RoundKey = GRAD) -> RoundView:
    return RoundView(key, HONEST, sorted(HONEST), BYZ, {}, np.random.default_rng(0))


def honest_mean() -> np.ndarray:
    return np.mean([HONEST[k] for k in sorted(HONEST)], axis=0)


def test_avg_zero_makes_the_plain_mean_vanish() -> None:
    msgs = make_attack("avg_zero").messages(view())
    total = sum(HONEST.values()) + sum(msgs[b][0] for b in BYZ)
    assert np.allclose(total / 13, 0, atol=1e-5)


def test_large_noise_is_large_and_differs_per_byzantine() -> None:
    msgs = make_attack("large_noise", {"scale": 1000.0}).messages(view())
    assert max(np.abs(msgs[b][0]).max() for b in BYZ) > 500
    assert not np.array_equal(msgs[10][0], msgs[11][0])


def test_attacks_blend_in_outside_their_phases() -> None:
    msgs = make_attack("avg_zero").messages(view(AGREE))  # avg_zero acts on gradients only
    assert np.allclose(msgs[10][3], honest_mean(), atol=1e-6)
    msgs = make_attack("mda_fooling").messages(view(GRAD))  # agreement only
    assert np.allclose(msgs[10][3], honest_mean(), atol=1e-6)
    msgs = make_attack("avg_zero", {"phases": ["gradient", "agreement"]}).messages(view(AGREE))
    assert not np.allclose(msgs[10][3], honest_mean(), atol=1e-3)


def test_equivocation_sends_different_vectors_to_different_peers() -> None:
    msgs = make_attack("equivocation").messages(view(AGREE))
    assert not np.allclose(msgs[10][0], msgs[10][9])
    assert np.allclose((msgs[10][0] + msgs[10][9]) / 2, honest_mean(), atol=1e-5)


def test_silence_sends_nothing() -> None:
    assert all(not m for m in make_attack("silence").messages(view()).values())


def test_alie_ipm_sign_flip_mimic() -> None:
    mean = honest_mean()
    std = np.std(np.stack([HONEST[k] for k in sorted(HONEST)]), axis=0)
    alie = make_attack("alie", {"z": 1.5}).messages(view())[10][0]
    assert np.allclose(alie, mean - 1.5 * std, atol=1e-5)
    ipm = make_attack("ipm", {"epsilon": 0.5}).messages(view())[10][0]
    assert np.allclose(ipm, -0.5 * mean, atol=1e-5)
    flip = make_attack("sign_flip").messages(view())[10][0]
    assert np.allclose(flip, -mean, atol=1e-5)
    mimic = make_attack("mimic", {"target": 4}).messages(view())[12][7]
    assert np.array_equal(mimic, HONEST[4])


def test_mda_fooling_stays_inside_the_honest_ball() -> None:
    vec = make_attack("mda_fooling").messages(view(AGREE))[10][0]
    stacked = np.stack(list(HONEST.values()))
    diameter = max(np.linalg.norm(a - b) for a in stacked for b in stacked)
    assert np.linalg.norm(vec - honest_mean()) <= diameter


def test_drag_pulls_agreement_against_the_last_honest_gradient() -> None:
    """Blends in until it has seen a gradient round, and in it; then sits inside the honest
    ball, displaced against that round's honest mean gradient."""
    drag = make_attack("drag", {"fit": False})
    assert np.allclose(drag.messages(view(AGREE))[10][0], honest_mean(), atol=1e-6)  # nothing seen yet
    gradients = {k: np.full(20, 0.5, np.float32) + 0.01 * k for k in range(10)}
    msgs = drag.messages(RoundView(GRAD, gradients, sorted(gradients), BYZ, {}, np.random.default_rng(0)))
    assert np.allclose(msgs[11][2], np.mean(list(gradients.values()), axis=0), atol=1e-6)  # blends in
    vec = drag.messages(view(AGREE))[10][0]
    stacked = np.stack(list(HONEST.values()))
    diameter = max(np.linalg.norm(a - b) for a in stacked for b in stacked)
    shift = vec - honest_mean()
    assert np.linalg.norm(shift) == pytest.approx(0.95 * diameter, rel=1e-4)
    ascent = np.mean(list(gradients.values()), axis=0)
    assert np.dot(shift, ascent) / (np.linalg.norm(shift) * np.linalg.norm(ascent)) == pytest.approx(-1.0, abs=1e-5)


def test_creep_sits_inside_the_spread_and_always_leans_the_same_way() -> None:
    creep = make_attack("creep", {"z": 1.0})
    stacked = np.stack([HONEST[k] for k in sorted(HONEST)]).astype(np.float64)
    first = creep.messages(view(GRAD))[10][0] - honest_mean()
    assert np.allclose(np.abs(first), stacked.std(0), rtol=1e-4)  # one standard deviation per coordinate
    other = {k: v * 3 + 1 for k, v in HONEST.items()}
    second = creep.messages(RoundView(AGREE, other, sorted(other), BYZ, {}, np.random.default_rng(1)))[12][5]
    second -= np.mean([other[k] for k in sorted(other)], axis=0)
    assert np.array_equal(np.sign(first), np.sign(second))  # the same sign pattern in every round and phase


def test_overshoot_pushes_agreement_further_along_the_honest_step() -> None:
    overshoot = make_attack("overshoot", {"fit": False})
    start = {k: np.zeros(20, np.float32) for k in range(10)}
    before = overshoot.messages(RoundView(RoundKey(3, Phase.AGREEMENT, 1), start, sorted(start), BYZ, {},
                                          np.random.default_rng(0)))
    assert np.array_equal(before[10][0], np.zeros(20))  # no step seen yet: blends in
    moved = {k: v + 1.0 for k, v in HONEST.items()}  # iteration 4's honest peers stepped by about +2
    vec = overshoot.messages(RoundView(AGREE, moved, sorted(moved), BYZ, {}, np.random.default_rng(0)))[10][0]
    centre = np.mean([moved[k] for k in sorted(moved)], axis=0)
    stacked = np.stack(list(moved.values()))
    diameter = max(np.linalg.norm(a - b) for a in stacked for b in stacked)
    shift = vec - centre
    assert np.linalg.norm(shift) == pytest.approx(0.95 * diameter, rel=1e-4)
    assert np.dot(shift, centre) / (np.linalg.norm(shift) * np.linalg.norm(centre)) == pytest.approx(1.0, abs=1e-5)
    restored = make_attack("overshoot", {"fit": False})
    restored.load_state_dict(overshoot.state_dict())  # what an in-process checkpoint keeps
    again = restored.messages(RoundView(AGREE, moved, sorted(moved), BYZ, {}, np.random.default_rng(0)))[10][0]
    assert np.array_equal(again, vec)


def test_dissensus_talks_to_one_half_at_a_time_inside_the_ball_and_never_equivocates() -> None:
    dissensus = make_attack("dissensus", {"fit": False})
    first = dissensus.messages(view(AGREE))
    second = dissensus.messages(view(RoundKey(4, Phase.AGREEMENT, 2)))
    halves = [sorted(first[10]), sorted(second[10])]
    assert halves[0] and halves[1] and not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(HONEST)  # the halves alternate and cover everyone
    stacked = np.stack([HONEST[k] for k in sorted(HONEST)]).astype(np.float64)
    diameter = max(np.linalg.norm(a - b) for a in stacked for b in stacked)
    for messages, half in zip((first, second), halves):
        vectors = {messages[b][r].tobytes() for b in BYZ for r in half}
        assert len(vectors) == 1  # one vector per slot: nothing to prove
        shift = messages[10][half[0]] - honest_mean()
        assert np.linalg.norm(shift) == pytest.approx(0.95 * diameter, rel=1e-4)
        away = stacked[half].mean(0) - stacked.mean(0)
        assert np.dot(shift, away) > 0  # towards the addressed half's side
    assert all(len(m) == len(HONEST) for m in make_attack("dissensus").messages(view(GRAD)).values())  # blends in


def test_a_fitted_agreement_vector_is_as_far_out_as_mda_keeps_it() -> None:
    from adversary.attacks import _agreement_point
    from peer.engine.mda import mda_select

    honest = np.stack([HONEST[k] for k in sorted(HONEST)]).astype(np.float64)
    direction = np.zeros(20)
    direction[0] = 1.0
    q = len(honest)

    def kept(point: np.ndarray) -> bool:
        return mda_select(np.vstack([honest, np.repeat(point[None], 3, axis=0)]), q)[0][-1] >= q

    fitted = _agreement_point(honest, direction, 0.95, True, 3)
    shift = float(np.linalg.norm(fitted - honest.mean(0)))
    assert shift > 0 and kept(fitted)
    assert not kept(honest.mean(0) + 1.05 * shift * direction)  # a little further: left out
    fixed = _agreement_point(honest, direction, 0.95, False, 3)
    assert not kept(fixed)  # 0.95 of the diameter is too far for MDA here: why `fit` is the default
    same = np.repeat(honest[:1], q, axis=0)
    assert np.array_equal(_agreement_point(same, direction, 0.95, True, 3), same[0])  # no spread, no room


@pytest.mark.parametrize("name, params, match", [
    ("large_noise", {"scale": "big"}, "scale"),
    ("ipm", {"epsilon": float("inf")}, "epsilon"),
    ("alie", {"zz": 1.0}, "zz"),
    ("avg_zero", {"phases": ["gradient", "bogus"]}, "phases"),
])
def test_bad_attack_parameters_are_refused(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_attack(name, params)


def test_every_attack_produces_well_formed_messages() -> None:
    for name in ATTACKS:
        if name == "random_action":
            continue  # needs a running shadow state machine; covered in test_inprocess
        for key in (GRAD, AGREE):
            msgs = make_attack(name).messages(view(key))
            assert set(msgs) == set(BYZ)
            for addressed in msgs.values():
                for receiver, vec in addressed.items():
                    assert receiver in HONEST
                    assert vec is None or (vec.shape == (20,) and vec.dtype == np.float32 and np.isfinite(vec).all())


def test_late_delivery_misses_the_round_in_process_and_blends_in_on_the_wire() -> None:
    attack = make_attack("late_delivery", {"delay": 2.0})
    assert all(not m for m in attack.messages(view()).values())  # in process: too late = silence
    wire_msgs = attack.wire_messages(view())
    assert np.allclose(wire_msgs[10][0], honest_mean(), atol=1e-6) and attack.delay == 2.0
