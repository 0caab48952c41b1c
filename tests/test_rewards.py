import pytest

from orchestrator.rewards import RewardWeights, discounted_returns, turn_reward, verdict_reward

W = RewardWeights()


@pytest.mark.parametrize(
    ("compiled", "correct", "speedup", "disqualified", "expected"),
    [
        (False, False, None, False, 0.0),
        (True, False, None, False, 0.1),
        (True, True, 0.5, False, 0.4),
        (True, True, 1.5, False, 0.9),
        (True, True, 2.0, False, 1.4),
        (True, True, 50.0, False, 2.4),  # speedup bonus capped at 2
        (True, True, 3.0, True, 0.0),  # a strict check violation zeroes everything
        (False, True, 3.0, False, 0.0),  # "correct" without compiling is impossible; never rewarded
    ],
)
def test_turn_reward_follows_design_defaults(compiled, correct, speedup, disqualified, expected):
    assert turn_reward(compiled=compiled, correct=correct, speedup=speedup, disqualified=disqualified, weights=W) == pytest.approx(expected)


def test_discounted_returns():
    assert discounted_returns([0.0, 0.1, 1.4], 0.4) == pytest.approx([0.0 + 0.4 * (0.1 + 0.4 * 1.4), 0.1 + 0.4 * 1.4, 1.4])
    assert discounted_returns([], 0.4) == []


def test_verdict_reward_ignores_speedup_when_timing_is_not_meaningful():
    verdict = {"compiled": True, "correct": True, "speedup": 5.0, "timing_meaningful": False, "disqualified": False}
    assert verdict_reward(verdict, W) == pytest.approx(0.4)
    assert verdict_reward({**verdict, "timing_meaningful": True}, W) == pytest.approx(2.4)
