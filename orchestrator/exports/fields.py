"""How kturn's stored trajectories map onto the fields trainers know: instance ids, the conversation
with the answer, slime's status, what served each turn, and the token ids of turns that recorded
them (`turn_tokens`). Pure."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from db.exports import TrajectoryRecord
from orchestrator.problems import problem_key
from orchestrator.served_by import ServedBy

ANSWERS = ("cleaned", "raw")
# slime's statuses by the view's finish_kind. A loop abort is "truncated", not "aborted": slime takes
# an aborted sample for an interrupted one (re-queued for partial rollout, never trained on), while
# kturn evaluated and rewarded the loop-aborted answer, and training on it is what teaches not to loop.
SLIME_STATUS = {"length": "truncated", "loop_abort": "truncated", "abort": "aborted"}
_NUMBERED_NAME = re.compile(r"^(\d+)_")


def instance_id(trajectory: TrajectoryRecord) -> str:
    return problem_key(trajectory.problem, trajectory.level)


def extra_info(trajectory: TrajectoryRecord, served: ServedBy) -> dict[str, Any]:
    """The fields slime's kernel JSONL carries in `extra_info`, plus where the row came from and the
    model that wrote it."""
    numbered = _NUMBERED_NAME.match(trajectory.problem)
    return {
        "instance_id": instance_id(trajectory),
        "level": trajectory.level,
        "problem_id": int(numbered.group(1)) if numbered else None,
        "problem_name": trajectory.problem,
        "run_id": trajectory.run_id,
        "trajectory_id": trajectory.trajectory_id,
        "sample_index": trajectory.sample_index,
        "model": served.model,
        "model_path": served.model_path,
    }


def turn_origin(turn: dict[str, Any]) -> dict[str, Any]:
    """Which weights answered the turn, on which server, as the generate stage stored them for every
    turn (`turn_tokens.weight_version` holds the same): weights change during asynchronous RL, and a
    trainer corrects for the turns of older ones."""
    meta = turn["generation_meta"] or {}
    return {"weight_version": meta.get("weight_version"), "server": meta.get("server")}


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


# Why a turn's Sample has no token ids (metadata.token_ids), or "complete".
TOKEN_STATUS = {
    "complete": "prompt and output ids recorded",
    "not_recorded": "the run did not record tokens (kturn run --record-tokens)",
    "no_prompt_ids": "the server tokenized the prompt (kturn run --tokenizer MODEL sends input_ids)",
    "no_output_ids": "the backend returned no token ids (the OpenAI-compatible API, or replay)",
}


@dataclass(frozen=True)
class TurnTokenIds:
    """A turn's token ids as a trainer takes them: the whole sequence (prompt then output) and one
    loss-mask entry and one logprob per output token, or none of them."""

    status: str  # a key of TOKEN_STATUS
    tokens: list[int]
    response_length: int
    loss_mask: list[int] | None
    log_probs: list[float] | None


def token_ids(turn: dict[str, Any]) -> TurnTokenIds:
    stored = turn["tokens"]
    if stored is None:
        return TurnTokenIds("not_recorded", [], turn["completion_tokens"] or 0, None, None)
    prompt_ids, output_ids = stored["prompt_ids"], stored["output_ids"]
    if output_ids is None:
        return TurnTokenIds("no_output_ids", [], turn["completion_tokens"] or 0, None, None)
    if prompt_ids is None:
        return TurnTokenIds("no_prompt_ids", [], len(output_ids), None, None)
    return TurnTokenIds("complete", [*prompt_ids, *output_ids], len(output_ids), [1] * len(output_ids), stored["output_logprobs"])
