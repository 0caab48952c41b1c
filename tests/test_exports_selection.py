"""Which trajectories and turns an export takes (pure)."""
from __future__ import annotations

from db.exports import TrajectoryRecord
from orchestrator.exports.selection import select_trajectories, turn_selected


def head(problem: str, sample: int, status: str) -> TrajectoryRecord:
    return TrajectoryRecord(trajectory_id=hash((problem, sample)) % 10_000, run_id=1, problem=problem, level=1, problem_source="", sample_index=sample,
                            status=status, return_=0.5 if status == "completed" else None, finished_at=None)


HEADS = [head("1_ReLU", 0, "completed"), head("1_ReLU", 1, "completed"), head("2_Add", 0, "completed"), head("2_Add", 1, "failed"),
         head("3_Conv", 0, "running")]


def test_only_complete_groups_by_default():
    selection = select_trajectories(HEADS, all_groups=False)
    assert [(t.problem, t.sample_index) for t in selection.trajectories] == [("1_ReLU", 0), ("1_ReLU", 1)]
    assert selection.skipped_groups == {"2_Add": {"completed": 1, "failed": 1}, "3_Conv": {"running": 1}}
    assert selection.skipped_trajectories == 3


def test_all_groups_keeps_every_completed_trajectory():
    selection = select_trajectories(HEADS, all_groups=True)
    assert [(t.problem, t.sample_index) for t in selection.trajectories] == [("1_ReLU", 0), ("1_ReLU", 1), ("2_Add", 0)]
    assert selection.skipped_groups == {"3_Conv": {"running": 1}} and selection.skipped_trajectories == 2


def test_turn_choices_follow_the_view_flags():
    fast = {"state": "done", "metrics": {"compiled": 1, "correct": 1, "fast_1": 1, "fast_2": 0}}
    broken = {"state": "done", "metrics": {"compiled": 0, "correct": 0, "fast_1": 0, "fast_2": 0}}
    failed = {"state": "failed", "metrics": {"compiled": None, "correct": None, "fast_1": None, "fast_2": None}}
    assert [turn_selected(fast, w) for w in ("all", "compiled", "correct", "fast_1", "fast_2")] == [True, True, True, True, False]
    assert [turn_selected(broken, w) for w in ("all", "compiled", "correct")] == [True, False, False]
    assert not any(turn_selected(failed, w) for w in ("all", "compiled", "correct", "fast_1", "fast_2"))
