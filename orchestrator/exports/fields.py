"""How kturn's stored trajectories map onto the fields trainers know: instance ids, the conversation
with the answer, slime's status, token ids where the turns store them. Pure."""
from __future__ import annotations

import re
from typing import Any

from db.exports import TrajectoryRecord
from orchestrator.problems import problem_key

# The token-level columns of `turns` (issue 11). Exports use them where the schema has them and say
# which are missing otherwise; `token_fields` is the one place that reads them.
TOKEN_COLUMNS = ("prompt_token_ids", "output_token_ids", "output_logprobs")
ANSWERS = ("cleaned", "raw")
SLIME_STATUS = {"length": "truncated", "abort": "aborted", "loop_abort": "aborted"}
_NUMBERED_NAME = re.compile(r"^(\d+)_")


def instance_id(trajectory: TrajectoryRecord) -> str:
    return problem_key(trajectory.problem, trajectory.level)


def extra_info(trajectory: TrajectoryRecord) -> dict[str, Any]:
    """The fields slime's kernel JSONL carries in `extra_info`, plus where the row came from."""
    numbered = _NUMBERED_NAME.match(trajectory.problem)
    return {
        "instance_id": instance_id(trajectory),
        "level": trajectory.level,
        "problem_id": int(numbered.group(1)) if numbered else None,
        "problem_name": trajectory.problem,
        "run_id": trajectory.run_id,
        "trajectory_id": trajectory.trajectory_id,
        "sample_index": trajectory.sample_index,
    }


def answer(turn: dict[str, Any], which: str) -> str:
    """The assistant's answer: "cleaned" (reasoning and loop tail removed, as later prompts show it) or
    "raw" (exactly what the model produced)."""
    if which == "raw":
        return turn["raw_response"] or ""
    return turn["cleaned_response"] if turn["cleaned_response"] is not None else turn["raw_response"] or ""


def conversation(turn: dict[str, Any], which: str) -> list[dict[str, str]]:
    """The messages sent for `turn` (earlier turns as the model saw them) and the turn's own answer."""
    return [*(turn["prompt_messages"] or []), {"role": "assistant", "content": answer(turn, which)}]


def slime_status(turn: dict[str, Any]) -> str:
    if turn["state"] == "failed":
        return "failed"
    return SLIME_STATUS.get(turn["metrics"]["finish_kind"], "completed")


def missing_token_columns(turn_columns: set[str]) -> list[str]:
    return [name for name in TOKEN_COLUMNS if name not in turn_columns]


def token_fields(turn: dict[str, Any]) -> tuple[list[int] | None, list[int] | None, list[float] | None]:
    """(prompt token ids, output token ids, output logprobs), each None where not stored."""
    return tuple(_as_list(turn.get(name)) for name in TOKEN_COLUMNS)


def _as_list(value) -> list | None:
    return None if value is None else list(value)
