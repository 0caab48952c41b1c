"""Which trajectories and turns an export takes. Pure.

Group-based trainers (GRPO) need every sample of a prompt: by default only problems all of whose
trajectories completed are exported; `all_groups` keeps every completed trajectory instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db.exports import TrajectoryRecord

TURN_SELECTIONS = ("all", "compiled", "correct", "fast_1", "fast_2")


@dataclass
class Selection:
    trajectories: list[TrajectoryRecord]
    skipped_groups: dict[str, dict[str, int]] = field(default_factory=dict)  # problem → trajectory statuses
    skipped_trajectories: int = 0


def select_trajectories(heads: list[TrajectoryRecord], all_groups: bool) -> Selection:
    groups: dict[tuple[str, int | None], list[TrajectoryRecord]] = {}
    for head in heads:
        groups.setdefault((head.problem, head.level), []).append(head)
    selection = Selection(trajectories=[])
    for (problem, _level), members in groups.items():
        completed = [t for t in members if t.status == "completed"]
        if len(completed) == len(members) or (all_groups and completed):
            selection.trajectories += completed
            selection.skipped_trajectories += len(members) - len(completed)
        else:
            statuses: dict[str, int] = {}
            for member in members:
                statuses[member.status] = statuses.get(member.status, 0) + 1
            selection.skipped_groups[problem] = statuses
            selection.skipped_trajectories += len(members)
    return selection


def turn_selected(turn: dict[str, Any], which: str) -> bool:
    """Whether `turn` passes `which` (one of TURN_SELECTIONS), by the `turn_metrics` view's flags."""
    if which == "all":
        return turn["state"] == "done"
    return turn["metrics"][which] == 1
