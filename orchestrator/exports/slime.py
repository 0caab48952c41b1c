"""slime's two input shapes. Pure.

- Rollout-buffer items (what `POST /buffer/write` takes): one per trajectory, the whole conversation
  ending with the last answer, rewarded with the trajectory's discounted return (as TritonForge's
  multi-turn generator sends them).
- `Sample` dicts (`Sample.from_dict`): one per turn, prompt = the messages sent for that turn,
  reward = the discounted return from that turn; `tokens` = the prompt ids sent + the output ids,
  `loss_mask` and `rollout_log_probs` one per output token, where the turn recorded them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from db.exports import TrajectoryRecord
from orchestrator.exports.fields import answer, conversation, extra_info, instance_id, slime_status, token_ids, turn_origin
from orchestrator.served_by import ServedBy


def buffer_item(trajectory: TrajectoryRecord, which_answer: str, served: ServedBy) -> dict[str, Any]:
    turns = trajectory.turns
    last = turns[-1]
    return {
        "uid": f"kturn-{trajectory.run_id}-{trajectory.trajectory_id}",
        "instance_id": instance_id(trajectory),
        "messages": conversation(last, which_answer),
        "reward": trajectory.return_,
        "extra_info": {
            **extra_info(trajectory, served),
            "finish_reason": last["finish_reason"],
            "num_turns": len(turns),
            "turn_rewards": [t["reward"] for t in turns],
            "turn_returns": [t["return_"] for t in turns],
            "turn_weight_versions": [turn_origin(t)["weight_version"] for t in turns],
            "final_compiled": last["compiled"],
            "final_correct": last["correct"],
            "final_speedup": last["speedup"],
        },
    }


def sample_dicts(trajectory: TrajectoryRecord, group_index: int, first_index: int, which_answer: str, served: ServedBy) -> Iterator[dict[str, Any]]:
    """One `Sample` dict per turn; `first_index` numbers them across the export."""
    for offset, turn in enumerate(trajectory.turns):
        ids = token_ids(turn)
        yield {
            "group_index": group_index,
            "index": first_index + offset,
            "rollout_id": trajectory.run_id,
            "prompt": turn["prompt_messages"],
            "tokens": ids.tokens,
            "response": answer(turn, which_answer),
            "response_length": ids.response_length,
            "label": trajectory.problem_source,
            "reward": turn["return_"],
            "loss_mask": ids.loss_mask,
            "rollout_log_probs": ids.log_probs,
            "status": slime_status(turn),
            "metadata": {
                **extra_info(trajectory, served),
                **turn_origin(turn),
                "turn_id": turn["id"],
                "turn_index": turn["turn_index"],
                "turn_reward": turn["reward"],
                "trajectory_return": trajectory.return_,
                "compiled": turn["compiled"],
                "correct": turn["correct"],
                "speedup": turn["speedup"],
                "finish_reason": turn["finish_reason"],
                "token_ids": ids.status,
            },
        }
