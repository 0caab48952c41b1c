"""One Parquet row per turn, for analysis (pyarrow): the trajectory's fields, every column of `turns`
typed as stored (JSON columns as JSON text, since their shape varies by row), the turn's `turn_tokens`
columns (32-bit lists; null where the run recorded no tokens), and the view's flags."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from db.exports import METRIC_COLUMNS, TrajectoryRecord
from orchestrator.exports.fields import instance_id

ARROW_TYPES = {
    "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "text": pa.string(), "json": pa.string(), "bytes": pa.binary(),
    "datetime": pa.timestamp("us", tz="UTC"), "int_list": pa.list_(pa.int32()), "float_list": pa.list_(pa.float32()),
}
TRAJECTORY_FIELDS = [
    ("run_id", pa.int64()), ("instance_id", pa.string()), ("problem", pa.string()), ("level", pa.int64()), ("sample_index", pa.int64()),
    ("trajectory_status", pa.string()), ("trajectory_return", pa.float64()),
]
METRIC_TYPES = {"finish_kind": pa.string(), "answer_chars": pa.int64(), "progress": pa.string()}  # the rest are 0/1 flags


def schema(turn_kinds: dict[str, str], token_kinds: dict[str, str]) -> pa.Schema:
    turn_fields = [(name, ARROW_TYPES[kind]) for name, kind in turn_kinds.items()]
    token_fields = [(name, ARROW_TYPES[kind]) for name, kind in token_kinds.items()]
    metric_fields = [(name, METRIC_TYPES.get(name, pa.int8())) for name in METRIC_COLUMNS if name not in turn_kinds]
    return pa.schema(TRAJECTORY_FIELDS + turn_fields + token_fields + metric_fields)


def rows(trajectory: TrajectoryRecord, turn_kinds: dict[str, str], token_kinds: dict[str, str]) -> list[dict[str, Any]]:
    head = {
        "run_id": trajectory.run_id, "instance_id": instance_id(trajectory), "problem": trajectory.problem, "level": trajectory.level,
        "sample_index": trajectory.sample_index, "trajectory_status": trajectory.status, "trajectory_return": trajectory.return_,
    }
    out = []
    for turn in trajectory.turns:
        columns = {name: _cell(turn[name], kind) for name, kind in turn_kinds.items()}
        tokens = {name: (turn["tokens"] or {}).get(name) for name in token_kinds}
        metrics = {name: value for name, value in turn["metrics"].items() if name not in turn_kinds}
        out.append({**head, **columns, **tokens, **metrics})
    return out


def write(trajectories: Iterable[TrajectoryRecord], path: Path, turn_kinds: dict[str, str], token_kinds: dict[str, str], chunk: int = 500) -> int:
    """Write the turns of `trajectories`; returns how many rows were written."""
    table_schema = schema(turn_kinds, token_kinds)
    written = 0
    pending: list[dict[str, Any]] = []
    with pq.ParquetWriter(path, table_schema) as writer:
        for trajectory in trajectories:
            pending += rows(trajectory, turn_kinds, token_kinds)
            if len(pending) >= chunk:
                writer.write_table(pa.Table.from_pylist(pending, schema=table_schema))
                written += len(pending)
                pending = []
        writer.write_table(pa.Table.from_pylist(pending, schema=table_schema))
    return written + len(pending)


def _cell(value: Any, kind: str) -> Any:
    if kind == "json" and value is not None:
        return json.dumps(value, ensure_ascii=False)
    return value
