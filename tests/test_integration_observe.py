"""Seeing, querying and exporting a run that really went through the Celery workers, recording its
tokens (input_ids from a real tokenizer, output ids and logprobs): `kturn report` (tables, JSON, the
PNG), the SQL views, `kturn compare`, every `kturn export` format read back by json/pyarrow and checked
against the tables (`turn_tokens` included), the push to a buffer server, Flower behind basic auth,
and kturn's own counters."""
from __future__ import annotations

import base64
import json
import re
import struct
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from tokenizers import Tokenizer

from orchestrator.problems import BUNDLED_DIR
from orchestrator.stages import STAGES
from tests.cluster import free_port, rows, run_args, started, wait_for
from tests.tiny_tokenizer import write_tokenizer
from workers.generation.chat_template import render_chatml

pytestmark = pytest.mark.integration

DEMO = {(a["problem"], a["turn"]): a["text"] for a in map(json.loads, (BUNDLED_DIR.parent / "demo_answers.jsonl").read_text().splitlines())}
LOOPING = "I will write a custom C++ kernel for ReLU.\n" + "Let me think about the best approach.\n" * 300
RELU_GOOD, RELU_BROKEN = DEMO[("level1/1_ReLU", 2)], DEMO[("level1/1_ReLU", 1)]
FENCE_TAIL = "\n```\n```\n```\n```\n"

# Two samples per problem, two turns. ReLU: one sample loops then recovers (improved), the other is
# correct at once and then breaks the build (regressed). Scaled add: incorrect, then correct (both
# improved), the correct answer ending on a stop string.
SCRIPT = {
    "torch.relu(x)": [LOOPING, RELU_GOOD],
    "began repeating itself": [RELU_GOOD],
    "Your previous answer is correct": [RELU_BROKEN],
    "a * self.alpha + b": [DEMO[("level1/2_Scaled_Add", 0)]],
    "compiled but is incorrect": [DEMO[("level1/2_Scaled_Add", 1)] + FENCE_TAIL],
}
SLIME_SAMPLE_FIELDS = {"group_index", "index", "rollout_id", "prompt", "tokens", "response", "response_length", "label", "reward",
                       "loss_mask", "rollout_log_probs", "status", "metadata"}
BUFFER_FIELDS = {"uid", "instance_id", "messages", "reward", "extra_info"}
WEIGHTS = "step-7"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real byte-level BPE tokenizer.json, shared by the worker (input_ids) and the double (decoding them)."""
    corpus = [path.read_text() for path in sorted(BUNDLED_DIR.rglob("*.py"))] + list(SCRIPT)
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json", corpus)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url, tokenizer):
    with started(tmp_path_factory.mktemp("observe"), postgres_url, redis_url, SCRIPT, "--tokenizer", str(tokenizer), "--weight-version", WEIGHTS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def run_id(cluster, tokenizer):
    return cluster.kturn_json(*run_args(cluster, 2, 2, "--record-tokens", "--tokenizer", str(tokenizer)), "--wait", timeout=900)["run"]


@pytest.fixture(scope="module")
def stored(run_id, db):
    """The run's turns straight from the tables, keyed by (problem, sample, turn), each with its
    `turn_tokens` row under "tokens"."""
    turns = rows(db, """
        SELECT p.name AS problem, p.level, p.source, tr.sample_index, tr."return" AS trajectory_return, tr.id AS trajectory, t.*
        FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id JOIN problems p ON p.id = tr.problem_id
        WHERE tr.run_id = :run ORDER BY p.name, tr.sample_index, t.turn_index""", run=run_id)
    tokens = {row["turn_id"]: row for row in rows(db, "SELECT * FROM turn_tokens WHERE turn_id IN (SELECT id FROM turns WHERE trajectory_id IN "
                                                      "(SELECT id FROM trajectories WHERE run_id = :run))", run=run_id)}
    assert {t["state"] for t in turns} == {"done"} and len(turns) == 8 and set(tokens) == {t["id"] for t in turns}
    return {(t["problem"], t["sample_index"], t["turn_index"]): {**t, "tokens": tokens[t["id"]]} for t in turns}


def relu_samples(stored) -> tuple[int, int]:
    """(the sample that looped first, the sample that was correct first)."""
    looped = next(s for s in (0, 1) if stored[("1_ReLU", s, 0)]["degenerate"])
    return looped, 1 - looped


# ---------------------------------------------------------------- kturn report


@pytest.fixture(scope="module")
def report(cluster, run_id):
    return cluster.kturn_json("report", str(run_id))


def test_report_counts_what_the_run_did(cluster, report, stored):
    looped, first_correct = relu_samples(stored)
    turn0, turn1 = report["turns"]
    assert turn0["turn"] == 0 and turn0["turns"] == 4 and turn0["evaluated"] == 4
    assert turn0["degenerate_rate"] == 0.25 and turn1["degenerate_rate"] == 0.0
    # turn 0: loop (no code), ReLU correct, two incorrect scaled adds; turn 1: ReLU correct, ReLU broken, two correct adds
    assert turn0["funnel"]["extracted"] == 0.75 and turn0["funnel"]["compiled"] == 0.75 and turn0["funnel"]["correct"] == 0.25
    assert turn1["funnel"]["extracted"] == 1.0 and turn1["funnel"]["compiled"] == 0.75 and turn1["funnel"]["correct"] == 0.75
    assert turn1["progress"] == {"improved": 3, "held": 0, "regressed": 1}
    assert report["trajectories"]["first_to_last"] == {"improved": 3, "held": 0, "regressed": 1}
    assert report["trajectories"]["count"] == 4 and report["trajectories"]["solved"] == 4
    looped_turn = stored[("1_ReLU", looped, 0)]  # aborted while it streamed
    assert looped_turn["finish_reason"]["type"] == "loop" and looped_turn["loop_onset"] is not None
    assert turn0["finish"] == {"loop_abort": 1, "end_of_turn": 3} and turn1["finish"] == {"end_of_turn": 2, "stop_string": 2}
    assert report["served_by"] == {"model": "Qwen/Qwen3-8B", "model_path": "Qwen/Qwen3-8B", "weight_version": WEIGHTS, "urls": [cluster.double_url]}
    assert turn0["repetition_warnings"]["turns"] == 1
    lengths = [len(t["raw_response"]) for t in stored.values()]
    assert report["overall"]["answer_chars"]["max"] == max(lengths) and report["overall"]["answer_chars"]["count"] == 8
    assert report["overall"]["answer_chars"]["long_share"] == sum(n > 5000 for n in lengths) / 8
    assert report["overall"]["completion_tokens"]["mean"] == pytest.approx(sum(t["completion_tokens"] for t in stored.values()) / 8)
    rewards = [t["reward"] for t in stored.values()]
    assert report["overall"]["mean_reward"] == pytest.approx(sum(rewards) / 8)
    fast = [t for t in stored.values() if t["correct"] and t["speedup"] > 1 and t["reward"] > 0]
    assert report["overall"]["funnel"]["fast_1"] == pytest.approx(len(fast) / 8)
    returns = [stored[(p, s, 0)]["trajectory_return"] for p in ("1_ReLU", "2_Scaled_Add") for s in (0, 1)]
    assert report["trajectories"]["mean_return"] == pytest.approx(sum(returns) / 4)
    assert stored[("1_ReLU", first_correct, 1)]["reward"] < stored[("1_ReLU", first_correct, 0)]["reward"]


def test_report_table_and_plot(cluster, run_id, tmp_path):
    figure = tmp_path / "run.png"
    shown = cluster.kturn("report", str(run_id), "--plot", str(figure)).stdout
    assert "fast_1" in shown and "how answers ended" in shown and "improved 3, held 0, regressed 1" in shown
    assert f"Qwen/Qwen3-8B · weights {WEIGHTS} · {cluster.double_url}" in shown
    header = figure.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1430, 990)
    import matplotlib.image

    pixels = matplotlib.image.imread(figure)
    assert pixels.std() > 0.05  # drawn on, not a blank canvas


def test_report_rejects_bad_arguments(cluster, run_id, tmp_path):
    missing = cluster.kturn("report", "999999", check=False)
    assert missing.returncode == 2 and "no run 999999" in missing.stderr
    not_png = cluster.kturn("report", str(run_id), "--plot", str(tmp_path / "x.jpg"), check=False)
    assert not_png.returncode == 2 and ".png" in not_png.stderr and not (tmp_path / "x.jpg").exists()


# ---------------------------------------------------------------- the SQL views, as the README queries them


def test_readme_queries_answer_on_postgres(run_id, stored, db):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    best, per_turn, regressed = (readme_query(readme, title) for title in ("best speedup per problem", "compile rate per turn", "turns that regressed"))
    by_problem = {r["problem"]: r for r in rows(db, best, run=run_id)}
    correct_speedups = {p: max(t["speedup"] for (q, _, _), t in stored.items() if q == p and t["correct"] and t["reward"] > 0) for p in ("1_ReLU", "2_Scaled_Add")}
    assert {p: r["best_speedup"] for p, r in by_problem.items()} == pytest.approx(correct_speedups)
    assert [(r["turn_index"], float(r["compile_rate"])) for r in rows(db, per_turn, run=run_id)] == [(0, 0.75), (1, 0.75)]
    looped, first_correct = relu_samples(stored)
    [turn] = rows(db, regressed, run=run_id)
    broken = stored[("1_ReLU", first_correct, 1)]
    assert turn["problem"] == "1_ReLU" and turn["sample_index"] == first_correct and turn["turn_index"] == 1
    assert turn["answer"] == broken["raw_response"] and json.loads(json.dumps(turn["prompt_messages"])) == broken["prompt_messages"]
    [summary] = rows(db, "SELECT * FROM run_summary WHERE run_id = :run", run=run_id)
    assert summary["trajectories"] == 4 and summary["turns"] == 8 and summary["done_turns"] == 8 and summary["solved_problems"] == 2
    assert summary["compile_rate"] == pytest.approx(0.75) and summary["degenerate_rate"] == pytest.approx(0.125)


def readme_query(readme: str, title: str) -> str:
    """The SQL block that follows the README line naming `title`; `1` as the run id becomes :run."""
    after = readme[readme.index(f"-- {title}"):]
    return after[: after.index("```")].replace("run_id = 1", "run_id = :run")


def test_compare_puts_two_runs_side_by_side(cluster, run_id, report, tmp_path):
    other = cluster.kturn_json(*run_args(cluster, 1, 1, "--id", "2"), "--wait", timeout=600)["run"]
    comparison = cluster.kturn_json("compare", str(run_id), str(other))
    metrics = {m["metric"]: m for m in comparison["metrics"]}
    other_report = cluster.kturn_json("report", str(other))
    assert metrics["turns"]["a"] == 8 and metrics["turns"]["b"] == 1 and metrics["turns"]["delta"] == -7
    correct = metrics["funnel.correct"]
    assert correct["a"] == report["overall"]["funnel"]["correct"] and correct["b"] == other_report["overall"]["funnel"]["correct"]
    assert correct["delta"] == pytest.approx(correct["b"] - correct["a"])
    assert [row["turn"] for row in comparison["per_turn"]] == [0, 1]
    assert comparison["per_turn"][1]["b_correct"] is None
    assert comparison["served_by"]["a"] == comparison["served_by"]["b"] == report["served_by"]
    assert f"run {run_id} vs run {other}" in cluster.kturn("compare", str(run_id), str(other)).stdout
    unrecorded = cluster.kturn("export", str(other), "--format", "samples", "--out", str(tmp_path / "other.jsonl"))
    assert "1 of 1 samples have no token ids" in unrecorded.stderr and "--record-tokens" in unrecorded.stderr
    [sample] = [json.loads(line) for line in (tmp_path / "other.jsonl").read_text().splitlines()]
    assert sample["tokens"] == [] and sample["rollout_log_probs"] is None and sample["metadata"]["token_ids"] == "not_recorded"


# ---------------------------------------------------------------- kturn export


class BufferServer:
    """A stand-in for slime's buffer server: records every POST; answers 503 to the first one, so the
    client's retry is exercised."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append((self.path, body))
                status = 503 if len(server.received) == 1 else 200
                payload = json.dumps({"success": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_buffer_items_are_written_and_pushed(cluster, run_id, stored, tmp_path):
    server = BufferServer()
    try:
        out = tmp_path / "buffer.jsonl"
        summary = cluster.kturn_json("export", str(run_id), "--format", "buffer", "--out", str(out), "--push", server.url)
    finally:
        server.close()
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["items"] == 4 and summary["pushed"] == 4 and summary["trajectories"] == 4
    assert [path for path, _ in server.received] == ["/buffer/write"] * 5  # the first answered 503 and was sent again
    assert [body for _, body in server.received[1:]] == items
    for item in items:
        assert set(item) == BUFFER_FIELDS
        info = item["extra_info"]
        last = stored[(info["problem_name"], info["sample_index"], 1)]
        assert item["instance_id"] == f"level1/{info['problem_name']}" == info["instance_id"] and info["level"] == 1
        assert info["problem_id"] == int(info["problem_name"].split("_")[0])
        assert item["uid"] == f"kturn-{run_id}-{last['trajectory']}"
        assert item["reward"] == pytest.approx(last["trajectory_return"])
        assert item["messages"] == [*last["prompt_messages"], {"role": "assistant", "content": last["cleaned_response"]}]
        assert [m["role"] for m in item["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert info["finish_reason"] == last["finish_reason"] and info["num_turns"] == 2
        assert info["turn_rewards"] == [stored[(info["problem_name"], info["sample_index"], k)]["reward"] for k in (0, 1)]
        assert info["final_correct"] == last["correct"] and info["model"] == info["model_path"] == "Qwen/Qwen3-8B"
        assert info["turn_weight_versions"] == [WEIGHTS, WEIGHTS]


def test_slime_samples_carry_the_recorded_tokens(cluster, run_id, stored, tokenizer, tmp_path):
    out = tmp_path / "samples.jsonl"
    result = cluster.kturn("export", str(run_id), "--format", "samples", "--out", str(out))
    assert "no token ids" not in result.stderr
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["index"] for s in samples] == list(range(8))
    decode = Tokenizer.from_file(str(tokenizer)).decode
    for sample in samples:
        assert set(sample) == SLIME_SAMPLE_FIELDS
        meta = sample["metadata"]
        turn = stored[(meta["problem_name"], meta["sample_index"], meta["turn_index"])]
        assert sample["group_index"] == (0 if meta["problem_name"] == "1_ReLU" else 1) and sample["rollout_id"] == run_id
        assert sample["prompt"] == turn["prompt_messages"] and sample["response"] == turn["cleaned_response"]
        assert sample["label"] == turn["source"] and sample["reward"] == pytest.approx(turn["return"])
        tokens = turn["tokens"]
        prompt_ids, output_ids = tokens["prompt_ids"], tokens["output_ids"]
        assert len(output_ids) == len(tokens["output_logprobs"]) == turn["completion_tokens"] > 0
        assert sample["tokens"] == prompt_ids + output_ids and sample["response_length"] == len(output_ids)
        assert sample["loss_mask"] == [1] * len(output_ids) and sample["rollout_log_probs"] == tokens["output_logprobs"]
        assert all(logprob <= 0 for logprob in sample["rollout_log_probs"])
        # the prompt ids are those of the exact prompt sent for this turn
        assert decode(sample["tokens"][: -sample["response_length"]], skip_special_tokens=False) == render_chatml(turn["prompt_messages"], False)
        looped = turn["finish_reason"]["type"] == "loop"
        assert sample["status"] == ("truncated" if looped else "completed") and meta["turn_reward"] == turn["reward"] and meta["turn_id"] == turn["id"]
        assert meta["token_ids"] == "complete" and meta["weight_version"] == tokens["weight_version"] == WEIGHTS and meta["server"] == cluster.double_url
        assert meta["model"] == meta["model_path"] == "Qwen/Qwen3-8B"
    assert sum(s["status"] == "truncated" for s in samples) == 1


def test_sft_takes_the_chosen_turns(cluster, run_id, stored, tmp_path):
    out = tmp_path / "sft.jsonl"
    cluster.kturn("export", str(run_id), "--format", "sft", "--out", str(out), "--answer", "raw")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    correct = [t for t in stored.values() if t["correct"]]
    assert len(lines) == len(correct) == 4
    for line in lines:
        meta = line["metadata"]
        turn = stored[(meta["problem_name"], meta["sample_index"], meta["turn_index"])]
        assert turn["correct"] and line["messages"] == [*turn["prompt_messages"], {"role": "assistant", "content": turn["raw_response"]}]
    compiled = cluster.kturn_json("export", str(run_id), "--format", "sft", "--out", str(out), "--turns", "compiled")
    assert compiled["items"] == sum(1 for t in stored.values() if t["compiled"])


def test_parquet_holds_every_turn_typed(cluster, run_id, stored, tmp_path):
    out = tmp_path / "turns.parquet"
    cluster.kturn("export", str(run_id), "--format", "parquet", "--out", str(out))
    table = pq.read_table(out)
    assert table.num_rows == 8
    types = {field.name: str(field.type) for field in table.schema}
    assert types["reward"] == "double" and types["compiled"] == "bool" and types["turn_index"] == "int64"
    assert types["created_at"] == "timestamp[us, tz=UTC]" and types["prompt_messages"] == "string" and types["fast_1"] == "int8"
    assert (types["output_ids"], types["output_logprobs"]) == ("list<element: int32>", "list<element: float>")
    for row in table.to_pylist():
        turn = stored[(row["problem"], row["sample_index"], row["turn_index"])]
        assert row["id"] == turn["id"] and row["reward"] == turn["reward"] and row["speedup"] == turn["speedup"]
        assert row["raw_response"] == turn["raw_response"] and row["correct"] == turn["correct"]
        assert json.loads(row["prompt_messages"]) == turn["prompt_messages"] and json.loads(row["finish_reason"]) == turn["finish_reason"]
        assert row["trajectory_return"] == turn["trajectory_return"] and row["instance_id"] == f"level1/{turn['problem']}"
        assert row["created_at"] == turn["created_at"]
        tokens = turn["tokens"]
        assert (row["prompt_ids"], row["output_ids"], row["weight_version"]) == (tokens["prompt_ids"], tokens["output_ids"], WEIGHTS)
        assert row["output_logprobs"] == pytest.approx(tokens["output_logprobs"], rel=1e-6)  # float4 in, float32 out


def test_tritonforge_logs_layout(cluster, run_id, stored, tmp_path):
    out = tmp_path / "multi_turn_logs"
    cluster.kturn("export", str(run_id), "--format", "tritonforge", "--out", str(out))
    files = sorted(p.name for p in out.iterdir())
    assert len([f for f in files if f.startswith("trajectory_level1_")]) == 4 and len([f for f in files if f.startswith("turn_level1_")]) == 8
    for path in out.glob("trajectory_*.json"):
        log = json.loads(path.read_text())
        assert set(log) == {"timestamp", "instance_id", "final_reward", "num_turns", "turn_rewards", "aggregated_return", "history", "messages", "execution_details", "extra_info"}
        info = log["extra_info"]
        turns = [stored[(info["problem_name"], info["sample_index"], k)] for k in (0, 1)]
        assert path.name == f"trajectory_{log['instance_id'].replace('/', '_')}_{log['timestamp']}.json"
        assert log["turn_rewards"] == [t["reward"] for t in turns] and log["aggregated_return"] == log["final_reward"] == turns[0]["trajectory_return"]
        for entry, turn in zip(log["history"], turns):
            assert entry["kernel_code"] == (turn["code"] or "") and entry["eval_result"]["compiled"] == turn["compiled"]
            assert entry["eval_result"]["correctness"] == turn["correct"] and entry["eval_result"]["runtime"] == (turn["runtime_ms"] or 0)
        assert log["execution_details"]["final_correctness"] == turns[1]["correct"] and log["execution_details"]["num_turns"] == 2
    for path in out.glob("turn_*.json"):
        log = json.loads(path.read_text())
        data = log["turn_data"]
        turn = stored[(data["extra_info"]["problem_name"], data["extra_info"]["sample_index"], log["turn_idx"])]
        assert path.name.startswith(f"turn_level1_{turn['problem']}_t{log['turn_idx']}_")
        assert data["response"] == turn["raw_response"] and data["prompt"] == turn["prompt_messages"] and data["reward"] == turn["reward"]
        assert data["extra_info"]["weight_version"] == WEIGHTS and data["extra_info"]["model"] == "Qwen/Qwen3-8B"
    again = cluster.kturn_json("export", str(run_id), "--format", "tritonforge", "--out", str(out))
    assert again["items"] == 12 and len(list(out.iterdir())) == 12  # exporting again rewrites, never duplicates


def test_incomplete_groups_are_left_out(cluster, db, tmp_path):
    # A server that passes the checks before the run, then refuses every prompt (400): both samples fail.
    refusing = cluster.start_double({"a key no prompt holds": ["-"]}, name="refusing_double")
    args = run_args(cluster, 2, 1, "--id", "2")
    args[args.index("--url") + 1] = refusing
    waited = cluster.kturn(*args, "--wait", "--json", timeout=300, check=False)
    assert waited.returncode == 1 and "2 of 2 trajectories failed" in waited.stderr  # --wait says the run failed
    failed = json.loads(waited.stdout.strip().splitlines()[-1])["run"]
    out = tmp_path / "none.jsonl"
    result = cluster.kturn("export", str(failed), "--format", "buffer", "--out", str(out))
    assert out.read_text() == "" and "skipped 2_Scaled_Add" in result.stderr and "failed 2" in result.stderr
    unusable = cluster.kturn("export", str(failed), "--format", "sft", "--push", "http://127.0.0.1:9", check=False)
    assert unusable.returncode == 2 and "--format buffer" in unusable.stderr


# ---------------------------------------------------------------- Flower for real, kturn's own counters


def test_flower_requires_basic_auth_and_serves_metrics(cluster, run_id):
    url = cluster.start_flower(basic_auth="kturn:s3cret")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/workers", timeout=10)
    assert refused.value.code == 401
    authorised = urllib.request.Request(f"{url}/api/workers?refresh=1", headers={"Authorization": "Basic " + base64.b64encode(b"kturn:s3cret").decode()})

    def listed_workers() -> int:
        """Workers in an authorised refresh (which waits a second for their replies: asked again until every one answered)."""
        with urllib.request.urlopen(authorised, timeout=30) as response:
            assert response.status == 200
            return len(json.loads(response.read()))

    assert wait_for(lambda: (listed := listed_workers()) >= len(STAGES) and listed, 60, "Flower to list a worker per stage") == len(STAGES)
    cluster.kturn(*run_args(cluster, 1, 1, "--id", "2"), "--wait")  # Flower learns tasks from events

    stage_tasks = {"kturn.generate", "kturn.clean", "kturn.evaluate"}

    def succeeded_stage_tasks() -> set[str]:
        """The stage tasks Flower's metrics count a task-succeeded event of. Waited for by name: each
        worker sends its events in batches, and CI once found three lines before the evaluate
        worker's batch had come (a wait for any three lines, then the assertion on the names)."""
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # Prometheus scrapes without credentials
            lines = response.read().decode().splitlines()
        succeeded = [line for line in lines if line.startswith("flower_events_total") and 'type="task-succeeded"' in line]
        return {name for name in stage_tasks if any(f'task="{name}"' in line for line in succeeded)}

    wait_for(lambda: succeeded_stage_tasks() == stage_tasks, 60, "Flower's task metrics of the three stages")


def test_kturn_metrics_and_top_show_queues_and_open_turns(cluster, db):
    port = free_port()
    cluster._spawn("metrics", [str(Path(sys.executable).with_name("kturn")), "metrics", "--port", str(port), "--address", "127.0.0.1"])

    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                return response.read().decode()
        except OSError:
            return None

    first = wait_for(scrape, 60, "kturn metrics")
    assert "kturn_up 1.0" in first and 'kturn_queue_messages{queue="generate"} 0.0' in first and 'kturn_runs{status="completed"}' in first
    generator = next(name for name in cluster.processes if name.startswith("generate-"))
    cluster.kill(generator)  # nothing takes the new run's turns off the generate queue
    try:
        waiting = cluster.kturn_json(*run_args(cluster, 2, 1, "--id", "2"))["run"]
        top = cluster.kturn_json("top")
        assert top["queues"]["generate"] == 2 and top["open_runs"][str(waiting)] == {"pending": 2}
        assert top["queues"]["preflight"] == 0  # the evaluate workers' second queue is shown too
        scraped = scrape()
        assert 'kturn_queue_messages{queue="generate"} 2.0' in scraped
        assert f'kturn_open_run_turns{{run="{waiting}",state="pending"}} 2.0' in scraped
        assert "pending" in cluster.kturn("top", "--once").stdout
        with db.begin() as connection:  # as if a worker had claimed a turn and died an hour ago
            connection.execute(text("""UPDATE turns SET state = 'generating', lease_expires_at = now() - interval '1 hour'
                                       WHERE id = (SELECT MIN(t.id) FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = :run)"""), {"run": waiting})
        assert cluster.kturn_json("top")["expired_leases"] >= 1
        assert re.search(r"^kturn_expired_leases [1-9]", scrape(), re.MULTILINE)
        cluster.kturn("reconcile", "--older-than", "0")  # hands the turn back to its queue
    finally:
        cluster.start_worker("generate")
    wait_for(lambda: rows(db, "SELECT status FROM runs WHERE id = :run", run=waiting)[0]["status"] == "completed", 300, "the waiting run")
    assert 'kturn_queue_messages{queue="generate"} 0.0' in scrape()
