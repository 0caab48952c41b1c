"""Per-trajectory and per-turn JSON files in the layout of TritonForge's `multi_turn_logs/`, so its
tooling reads them. The layout is that of TritonForge's multi-turn kernel generator
(`SLIME/slime_plugins/rollout_buffer/generator/multi_turn_kernel_generator.py`, documented in
`SLIME/docs/en/MULTI_TURN_LOGGING.md` of RLsys-Foundation/TritonForge):

    turn_{instance_id}_t{turn_idx}_{timestamp}.json      {timestamp, instance_id, turn_idx, turn_data}
    trajectory_{instance_id}_{timestamp}.json            {timestamp, instance_id, final_reward, num_turns,
                                                          turn_rewards, aggregated_return, history,
                                                          messages, execution_details, extra_info}

Timestamps are `%Y%m%d_%H%M%S_%f` of when the turn was evaluated or the trajectory finished; a `/` in
an instance id (`level1/1_ReLU`) becomes `_` in file names only. Runtimes are milliseconds, and a
missing runtime or speedup is 0, as TritonForge writes them.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from db.exports import TrajectoryRecord
from orchestrator.exports.fields import answer, conversation, extra_info, instance_id, turn_origin
from orchestrator.served_by import ServedBy

TIMESTAMP = "%Y%m%d_%H%M%S_%f"


def eval_result(turn: dict[str, Any]) -> dict[str, Any]:
    return {
        "compiled": bool(turn["compiled"]),
        "correctness": bool(turn["correct"]),
        "runtime": turn["runtime_ms"] or 0,
        "speedup": turn["speedup"] or 0,
        "error_message": turn["error"] or "",
    }


def history_entry(turn: dict[str, Any]) -> dict[str, Any]:
    return {"turn_idx": turn["turn_index"], "kernel_code": turn["code"] or "", "eval_result": eval_result(turn), "reward": turn["reward"]}


def turn_log(trajectory: TrajectoryRecord, turn: dict[str, Any], timestamp: str, served: ServedBy) -> dict[str, Any]:
    iid = instance_id(trajectory)
    return {
        "timestamp": timestamp,
        "instance_id": iid,
        "turn_idx": turn["turn_index"],
        "turn_data": {
            "instance_id": iid,
            "turn_idx": turn["turn_index"],
            "prompt": turn["prompt_messages"],
            "response": answer(turn, "raw"),
            "kernel_code": turn["code"] or "",
            "eval_result": eval_result(turn),
            "reward": turn["reward"],
            "extra_info": {**extra_info(trajectory, served), **turn_origin(turn)},
        },
    }


def trajectory_log(trajectory: TrajectoryRecord, timestamp: str, which_answer: str, served: ServedBy) -> dict[str, Any]:
    turns = trajectory.turns
    rewards = [t["reward"] for t in turns]
    last = eval_result(turns[-1])
    return {
        "timestamp": timestamp,
        "instance_id": instance_id(trajectory),
        "final_reward": trajectory.return_,
        "num_turns": len(turns),
        "turn_rewards": rewards,
        "aggregated_return": trajectory.return_,
        "history": [history_entry(t) for t in turns],
        "messages": conversation(turns[-1], which_answer),
        "execution_details": {
            "final_compiled": last["compiled"],
            "final_correctness": last["correctness"],
            "final_runtime": last["runtime"],
            "final_speedup": last["speedup"],
            "num_turns": len(turns),
            "turn_rewards": rewards,
            "aggregated_return": trajectory.return_,
        },
        "extra_info": extra_info(trajectory, served),
    }


class LogDirectory:
    """Writes the files into one directory. Two files of one export never share a name (equal
    timestamps are nudged by a microsecond; TritonForge relied on wall-clock microseconds for the
    same); exporting a run again rewrites its files under the same names."""

    def __init__(self, directory: Path, served: ServedBy):
        self.directory, self.served = directory, served
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written: set[str] = set()

    def write(self, trajectory: TrajectoryRecord, which_answer: str) -> None:
        safe_id = instance_id(trajectory).replace("/", "_")
        for turn in trajectory.turns:
            path, stamp = self._free(lambda stamp: f"turn_{safe_id}_t{turn['turn_index']}_{stamp}.json", turn["evaluated_at"] or turn["updated_at"])
            self._dump(path, turn_log(trajectory, turn, stamp, self.served))
        path, stamp = self._free(lambda stamp: f"trajectory_{safe_id}_{stamp}.json", trajectory.finished_at or trajectory.turns[-1]["updated_at"])
        self._dump(path, trajectory_log(trajectory, stamp, which_answer, self.served))

    def _free(self, name, moment: datetime) -> tuple[Path, str]:
        while name(moment.strftime(TIMESTAMP)) in self.written:
            moment += timedelta(microseconds=1)
        stamp = moment.strftime(TIMESTAMP)
        self.written.add(name(stamp))
        return self.directory / name(stamp), stamp

    def _dump(self, path: Path, value: dict[str, Any]) -> None:
        path.write_text(json.dumps(value, ensure_ascii=False, indent=2, default=str))
