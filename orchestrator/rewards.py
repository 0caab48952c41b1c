"""Per-turn rewards and discounted returns (pure)."""
from __future__ import annotations

from pydantic import BaseModel


class RewardWeights(BaseModel):
    compiled: float = 0.1
    correct: float = 0.3
    speedup_cap: float = 2.0


def turn_reward(*, compiled: bool, correct: bool, speedup: float | None, disqualified: bool, weights: RewardWeights) -> float:
    """0.1 compiled, 0.3 correct, + min(max(speedup − 1, 0), cap); 0 for a strict check violation."""
    if disqualified:
        return 0.0
    reward = weights.compiled if compiled else 0.0
    if compiled and correct:
        reward += weights.correct
        if speedup is not None:
            reward += min(max(speedup - 1.0, 0.0), weights.speedup_cap)
    return round(reward, 6)


def discounted_returns(rewards: list[float], gamma: float) -> list[float]:
    """G_k = r_k + gamma * G_{k+1}, for every turn k."""
    returns: list[float] = []
    running = 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.append(round(running, 6))
    return returns[::-1]


def verdict_reward(verdict: dict, weights: RewardWeights) -> float:
    """The reward of a stored evaluation verdict (`EvalResult.as_dict()`)."""
    return turn_reward(
        compiled=bool(verdict.get("compiled")),
        correct=bool(verdict.get("correct")),
        speedup=verdict.get("speedup") if verdict.get("timing_meaningful", True) else None,
        disqualified=bool(verdict.get("disqualified")),
        weights=weights,
    )
