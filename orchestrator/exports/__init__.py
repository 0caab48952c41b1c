"""Exports of a run for RL trainers and analysis: `kturn export RUN --format ...`.

| format      | unit           | file                                                    |
|-------------|----------------|---------------------------------------------------------|
| buffer      | trajectory     | JSONL of slime rollout-buffer items (`--push URL` sends them too) |
| samples     | turn           | JSONL of slime `Sample` dicts                           |
| sft         | chosen turns   | chat-format JSONL (`{"messages": [...]}`)               |
| parquet     | turn           | Parquet, every column, for analysis                     |
| tritonforge | turn and trajectory | a directory in TritonForge's `multi_turn_logs/` layout |
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import exports as export_queries
from db.exports import TrajectoryRecord
from orchestrator.exports import parquet, sft, slime
from orchestrator.exports.selection import select_trajectories
from orchestrator.exports.tritonforge import LogDirectory
from orchestrator.served_by import ServedBy

FORMATS = ("buffer", "samples", "sft", "parquet", "tritonforge")
DEFAULT_OUT = {"buffer": "run{run}-buffer.jsonl", "samples": "run{run}-samples.jsonl", "sft": "run{run}-sft.jsonl",
               "parquet": "run{run}-turns.parquet", "tritonforge": "run{run}-multi_turn_logs"}


@dataclass(frozen=True)
class ExportRequest:
    run_id: int
    format: str
    out: Path
    served: ServedBy = field(default_factory=ServedBy)
    answer: str = "cleaned"
    turns: str = "correct"  # which turns the sft format takes
    all_groups: bool = False


@dataclass
class ExportResult:
    format: str
    path: str
    items: int = 0
    trajectories: int = 0
    skipped_groups: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_trajectories: int = 0
    token_ids: dict[str, int] = field(default_factory=dict)  # samples: how many have token ids ("complete"), and why not


def export_run(session: Session, request: ExportRequest) -> ExportResult:
    selection = select_trajectories(export_queries.trajectory_heads(session, request.run_id), request.all_groups)
    result = ExportResult(
        format=request.format, path=str(request.out), trajectories=len(selection.trajectories), skipped_groups=selection.skipped_groups,
        skipped_trajectories=selection.skipped_trajectories,
    )
    trajectories = export_queries.with_turns(session, selection.trajectories)
    if request.format == "parquet":
        kinds = export_queries.turn_column_kinds(), export_queries.token_column_kinds()
        result.items = _atomically(request.out, lambda path: parquet.write(trajectories, path, *kinds))
    elif request.format == "tritonforge":
        directory = LogDirectory(request.out, request.served)
        for trajectory in trajectories:
            directory.write(trajectory, request.answer)
        result.items = len(directory.written)
    else:
        items = _jsonl_items(request, trajectories, result.token_ids)
        result.items = _atomically(request.out, lambda path: _write_jsonl(items, path))
    return result


def _jsonl_items(request: ExportRequest, trajectories: Iterator[TrajectoryRecord], token_counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    if request.format == "buffer":
        return (slime.buffer_item(t, request.answer, request.served) for t in trajectories)
    if request.format == "sft":
        return (line for t in trajectories for line in sft.sft_lines(t, request.turns, request.answer, request.served))
    return _samples(trajectories, request, token_counts)


def _samples(trajectories: Iterator[TrajectoryRecord], request: ExportRequest, token_counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The Sample dicts, counting in `token_counts` how many carry token ids and why the others do not."""
    groups: dict[str, int] = {}
    index = 0
    for trajectory in trajectories:
        group = groups.setdefault(trajectory.problem, len(groups))
        for sample in slime.sample_dicts(trajectory, group, index, request.answer, request.served):
            index += 1
            status = sample["metadata"]["token_ids"]
            token_counts[status] = token_counts.get(status, 0) + 1
            yield sample


def _write_jsonl(items: Iterator[dict[str, Any]], path: Path) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def _atomically(path: Path, write) -> int:
    """Write to a sibling temporary file and rename it into place: an export that fails halfway
    leaves any earlier file of that name as it was."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        count = write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return count


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)
