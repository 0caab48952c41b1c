"""Chat-format SFT lines (`{"messages": [...]}`) of the turns chosen, e.g. the correct ones. Pure."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from db.exports import TrajectoryRecord
from orchestrator.exports.fields import conversation, extra_info, turn_origin
from orchestrator.exports.selection import turn_selected
from orchestrator.served_by import ServedBy


def sft_lines(trajectory: TrajectoryRecord, which_turns: str, which_answer: str, served: ServedBy) -> Iterator[dict[str, Any]]:
    for turn in trajectory.turns:
        if turn_selected(turn, which_turns):
            yield {
                "messages": conversation(turn, which_answer),
                "metadata": {**extra_info(trajectory, served), **turn_origin(turn), "turn_index": turn["turn_index"], "reward": turn["reward"],
                             "speedup": turn["speedup"], "correct": turn["correct"]},
            }
