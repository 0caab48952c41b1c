"""Token ids, finish reasons and provenance in the exports, on the embedded SQLite (packed 32-bit
BLOBs): one trajectory whose turns ended in each of the ways generation stores, with and without
`turn_tokens` rows. The same on Postgres, from a run through the real workers: test_integration_observe."""
from __future__ import annotations

import json
from array import array

import pyarrow.parquet as pq
import pytest

from db import generation as generation_queries
from db import reports as report_queries
from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import Trajectory, TrajectoryStatus, Turn, TurnState
from db.session import session_scope
from orchestrator.exports import ExportRequest, export_run, read_jsonl
from orchestrator.served_by import served_by

URL = "http://gpu1:30000"
CONFIG = {"model": "Qwen/Qwen3-8B", "generator": "sglang", "urls": [URL],
          "servers": [{"url": URL, "model_path": "/models/qwen3-8b", "weight_version": "step-3"}]}
PROMPT_IDS, OUTPUT_IDS = [151644, 8948, 198, 2610], [73, 1890, 4, 151645]
LOGPROBS = [-0.1, -2.5, -0.003, -1e-6]  # stored as float32
# (finish_reason as the generate stage stores it, the turn_tokens row or None, what the view calls it, slime's status, token ids)
TURNS = [
    ({"type": "loop", "onset": 40, "period": 12, "server": {"type": "abort", "message": "Abort requested by /abort_request"}},
     (PROMPT_IDS, OUTPUT_IDS, LOGPROBS), "loop_abort", "truncated", "complete"),
    ({"type": "stop", "matched": "```\n```"}, (None, OUTPUT_IDS, LOGPROBS), "stop_string", "completed", "no_prompt_ids"),
    ({"type": "stop", "matched": 151645}, None, "end_of_turn", "completed", "not_recorded"),
    ({"type": "length", "length": 8192}, (None, None, LOGPROBS), "length", "truncated", "no_output_ids"),
    ({"type": "abort", "reason": "cancelled", "server": {"type": "abort", "message": "Abort requested by /abort_request"}},
     (PROMPT_IDS, OUTPUT_IDS[:2], LOGPROBS[:2]), "abort", "aborted", "complete"),
]


def as_float32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('tokens') / 'kturn.sqlite'}"
    upgrade(url)
    with session_scope(url) as session:
        run_id, [first] = run_queries.create(session, CONFIG, [run_queries.NewProblem("1_ReLU", 1, "class Model: ...", "0" * 64, None)], samples=1)
        trajectory_id = session.get(Turn, first).trajectory_id
        for index, (finish, tokens, *_) in enumerate(TURNS):
            turn = session.get(Turn, first if index == 0 else turn_queries.add_next(session, trajectory_id, index))
            turn.state, turn.finish_reason, turn.completion_tokens = TurnState.done.value, finish, 4
            turn.prompt_messages = [{"role": "user", "content": f"turn {index}"}]
            turn.raw_response = turn.cleaned_response = f"answer {index}"
            turn.generation_meta = {"backend": "sglang", "server": URL, "weight_version": f"step-{3 + index}"}
            turn.loop_onset = finish.get("onset")
            turn.compiled, turn.correct, turn.reward, turn.return_ = True, False, 0.1, 0.1
            if tokens is not None:
                session.flush()
                generation_queries.store_tokens(session, turn.id, *tokens, weight_version=f"step-{3 + index}")
        trajectory = session.get(Trajectory, trajectory_id)
        trajectory.status, trajectory.return_ = TrajectoryStatus.completed.value, 0.1
    return url, run_id


def export(run, tmp_path, format: str, suffix: str = "jsonl"):
    url, run_id = run
    out = tmp_path / f"out.{suffix}"
    with session_scope(url) as session:
        result = export_run(session, ExportRequest(run_id=run_id, format=format, out=out, served=served_by(CONFIG)))
    return result, out


def test_the_view_names_every_finish_generation_stores(run):
    url, run_id = run
    with session_scope(url) as session:
        kinds = [row["finish_kind"] for row in report_queries.turn_metrics(session, run_id)]
    assert kinds == [kind for _, _, kind, _, _ in TURNS]


def test_samples_carry_the_recorded_token_ids(run, tmp_path):
    result, out = export(run, tmp_path, "samples")
    samples = list(read_jsonl(out))
    assert result.token_ids == {"complete": 2, "no_prompt_ids": 1, "not_recorded": 1, "no_output_ids": 1}
    for index, (sample, (_, tokens, _, status, token_status)) in enumerate(zip(samples, TURNS)):
        assert sample["status"] == status and sample["metadata"]["token_ids"] == token_status
        meta = sample["metadata"]
        assert (meta["model"], meta["model_path"], meta["weight_version"], meta["server"]) == ("Qwen/Qwen3-8B", "/models/qwen3-8b", f"step-{3 + index}", URL)
        if token_status == "complete":
            prompt_ids, output_ids, logprobs = tokens
            assert sample["tokens"] == prompt_ids + output_ids and sample["response_length"] == len(output_ids)
            assert sample["loss_mask"] == [1] * len(output_ids) and sample["rollout_log_probs"] == as_float32(logprobs)
        else:
            assert sample["tokens"] == [] and sample["loss_mask"] is None and sample["rollout_log_probs"] is None
            assert sample["response_length"] == (len(tokens[1]) if token_status == "no_prompt_ids" else 4)


def test_buffer_items_name_the_model_and_each_turns_weights(run, tmp_path):
    _, out = export(run, tmp_path, "buffer")
    [item] = read_jsonl(out)
    info = item["extra_info"]
    assert (info["model"], info["model_path"]) == ("Qwen/Qwen3-8B", "/models/qwen3-8b")
    assert info["turn_weight_versions"] == [f"step-{3 + k}" for k in range(len(TURNS))]


def test_parquet_holds_the_token_columns_typed(run, tmp_path):
    _, out = export(run, tmp_path, "parquet", "parquet")
    table = pq.read_table(out)
    items = {name: str(table.schema.field(name).type.value_type) for name in ("prompt_ids", "output_ids", "output_logprobs")}
    assert items == {"prompt_ids": "int32", "output_ids": "int32", "output_logprobs": "float"} and str(table.schema.field("weight_version").type) == "string"
    for row, (_, tokens, *_) in zip(table.to_pylist(), TURNS):
        prompt_ids, output_ids, logprobs = tokens or (None, None, None)
        assert (row["prompt_ids"], row["output_ids"]) == (prompt_ids, output_ids)
        assert row["output_logprobs"] == (None if logprobs is None else as_float32(logprobs))
        assert json.loads(row["finish_reason"]) == TURNS[row["turn_index"]][0]
