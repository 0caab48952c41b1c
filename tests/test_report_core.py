"""The report's arithmetic on hand-made `turn_metrics` rows (pure)."""
from __future__ import annotations

import pytest

from orchestrator.report import build_report, compare


def row(trajectory: int, turn: int, reward: float | None, *, chars: int = 1000, degenerate: int = 0, compiled: int | None = 1, correct: int | None = 0,
        fast_1: int | None = 0, progress: str | None = None, finish: str = "end_of_turn", state: str = "done") -> dict:
    return {"trajectory_id": trajectory, "turn_index": turn, "state": state, "trajectory_status": "completed", "trajectory_return": 1.0 if turn == 0 else None,
            "answer_chars": chars, "completion_tokens": None, "degenerate": degenerate, "finish_kind": finish, "repetition_warnings": degenerate * 2,
            "has_code": compiled, "compiled": compiled, "correct": correct, "fast_1": fast_1, "fast_2": 0, "reward": reward, "return": reward, "progress": progress}


SERVED = {"model": "Qwen/Qwen3-8B", "model_path": "/models/qwen3-8b", "weight_version": "step-3", "urls": ["http://gpu1:30000"]}


def run(run_id: int, status: str = "completed") -> dict:
    return {"id": run_id, "status": status, "served_by": SERVED}


ROWS = [
    row(1, 0, 0.0, chars=50, degenerate=1, compiled=0, finish="length"), row(1, 1, 0.4, correct=1, progress="improved"),
    row(2, 0, 1.4, correct=1, fast_1=1, chars=6000), row(2, 1, 0.1, progress="regressed"),
]


def test_per_turn_and_overall_figures():
    report = build_report(run(7), ROWS)
    turn0, turn1 = report["turns"]
    assert turn0["degenerate_rate"] == 0.5 and turn0["funnel"] == {"extracted": 0.5, "compiled": 0.5, "correct": 0.5, "fast_1": 0.5, "fast_2": 0.0}
    assert turn0["answer_chars"]["short_share"] == 0.5 and turn0["answer_chars"]["long_share"] == 0.5
    assert turn0["finish"] == {"length": 1, "end_of_turn": 1} and turn0["repetition_warnings"] == {"turns": 1, "warnings": 2}
    assert turn1["progress"] == {"improved": 1, "held": 0, "regressed": 1} and turn1["mean_reward"] == pytest.approx(0.25)
    assert report["overall"]["completion_tokens"] == {"count": 0} and report["served_by"] == SERVED
    assert report["trajectories"]["first_to_last"] == {"improved": 1, "held": 0, "regressed": 1} and report["trajectories"]["solved"] == 2


def test_unevaluated_turns_stay_out_of_the_rates():
    waiting = row(3, 0, None, compiled=None, correct=None, fast_1=None, state="pending") | {"answer_chars": None, "finish_kind": None, "degenerate": None}
    report = build_report(run(7, "running"), [*ROWS[:2], waiting])
    assert report["turns"][0]["evaluated"] == 1 and report["turns"][0]["funnel"]["compiled"] == 0.0 and report["turns"][0]["degenerate_rate"] == 1.0
    assert report["overall"]["states"] == {"done": 2, "pending": 1}


def test_compare_lists_differences():
    a = build_report(run(1), ROWS)
    b = build_report({**run(2), "served_by": {**SERVED, "weight_version": "step-4"}}, ROWS[:2])
    comparison = compare(a, b)
    assert comparison["served_by"] == {"a": SERVED, "b": {**SERVED, "weight_version": "step-4"}}
    metrics = {m["metric"]: m for m in comparison["metrics"]}
    assert metrics["turns"] == {"metric": "turns", "a": 4, "b": 2, "delta": -2}
    assert metrics["funnel.correct"]["delta"] == pytest.approx(0.5 - 0.5)
    assert metrics["trajectories.count"]["delta"] == -1
