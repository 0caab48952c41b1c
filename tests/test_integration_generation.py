"""A real Celery generate worker (threads pool) against the SGLang test double streaming at a fixed
token rate: a looping answer is aborted by its rid, a normal one is stored whole with its token ids
and logprobs, and cancelling a run aborts its requests in flight."""
from __future__ import annotations

import json
import time

import pytest

from orchestrator.problems import BUNDLED_DIR
from tests.cluster import Cluster, http_json, rows, turns_of, wait_for

pytestmark = pytest.mark.integration

DEMO = {(a["problem"], a["turn"]): a["text"] for a in map(json.loads, (BUNDLED_DIR.parent / "demo_answers.jsonl").read_text().splitlines())}
INTRO = "I will write a custom C++ kernel for ReLU.\n"
LOOPING = INTRO + "Let me think about the best approach once more.\n" * 300
NORMAL = DEMO[("level1/2_Scaled_Add", 2)]
SCRIPT = {"torch.relu(x)": [LOOPING], "a * self.alpha + b": [NORMAL]}
# Never loops, never ends soon: each line differs.
ENDLESS = "".join(f"Step {i}: the block index is {i * 7 % 1000}, the thread index {i * 13 % 977}.\n" for i in range(3000))
TOKEN_RATE = 400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url):
    cluster = Cluster(tmp_path_factory.mktemp("generation"), postgres_url, redis_url)
    try:
        cluster.start_double(SCRIPT, "--token-rate", str(TOKEN_RATE), "--weight-version", "step-3")
        cluster.slow_url = cluster.start_double({"": [ENDLESS]}, "--token-rate", "100", name="slow_double")
        cluster.kturn("db", "upgrade")
        cluster.start_worker("generate", "-P", "threads", "-c", "8")
        cluster.start_worker("clean")
        yield cluster
    finally:
        cluster.stop_all()


def _run(cluster: Cluster, url: str, *extra: str) -> int:
    return cluster.kturn_json("run", str(BUNDLED_DIR), "--samples", "2", "--turns", "1", "--backend", "cpp", "--device", "cpu",
                              "--generator", "sglang", "--url", url, *extra)["run"]


def _cleaned(db, run_id: int) -> list[dict]:
    """The run's turns once each has passed cleaning (one with code waits for its build, one without is done)."""
    return wait_for(lambda: (t := turns_of(db, run_id)) and all(x["cleaned_at"] is not None for x in t) and t, 120, "the turns to be cleaned")


@pytest.fixture(scope="module")
def run(cluster, db):
    run_id = _run(cluster, cluster.double_url, "--record-tokens")
    return run_id, {(t["problem"], t["sample_index"]): t for t in _cleaned(db, run_id)}


def test_a_streamed_loop_is_aborted_soon_after_its_onset(run, cluster):
    _, turns = run
    streams = {s["rid"]: s for s in http_json(f"{cluster.double_url}/_double/streams")}
    aborted = {a["rid"] for a in http_json(f"{cluster.double_url}/_double/aborts")}
    for sample in (0, 1):
        turn = turns[("1_ReLU", sample)]
        rid = f"kturn-turn-{turn['id']}"
        assert rid in aborted and streams[rid]["aborted"]
        assert streams[rid]["tokens_sent"] == turn["completion_tokens"] < len(LOOPING) // 4 // 5
        assert turn["finish_reason"]["type"] == "loop" and turn["finish_reason"]["server"]["type"] == "abort"
        assert turn["loop_onset"] == len(INTRO) and turn["finish_reason"]["period"] == len("Let me think about the best approach once more.\n")
        assert 0 < turn["tokens_after_onset"] <= 512
        assert LOOPING.startswith(turn["raw_response"]) and turn["chars_after_onset"] == len(turn["raw_response"]) - len(INTRO)
        assert turn["degenerate"] is True and turn["cleaned_response"].count("Let me think") == 1


def test_a_normal_answer_is_stored_whole_with_its_tokens(run, cluster, db):
    run_id, turns = run
    for sample in (0, 1):
        turn = turns[("2_Scaled_Add", sample)]
        assert turn["raw_response"] == NORMAL and turn["finish_reason"] == {"type": "stop", "matched": 151645}
        assert turn["loop_onset"] is None and turn["degenerate"] is False
        assert turn["generation_meta"]["weight_version"] == "step-3" and turn["generation_meta"]["server"] == cluster.double_url
        [tokens] = rows(db, """SELECT cardinality(output_ids) AS n_ids, cardinality(output_logprobs) AS n_logprobs, prompt_ids, weight_version,
                                      (SELECT sum(x) FROM unnest(output_logprobs) x) AS logprob_sum
                               FROM turn_tokens WHERE turn_id = :id""", id=turn["id"])
        assert tokens["n_ids"] == tokens["n_logprobs"] == turn["completion_tokens"] and tokens["logprob_sum"] < 0
        assert tokens["prompt_ids"] is None and tokens["weight_version"] == "step-3"  # text mode: no prompt ids
    [config] = rows(db, "SELECT config FROM runs WHERE id = :id", id=run_id)
    assert config["config"]["servers"] == [{"url": cluster.double_url, "model_path": "Qwen/Qwen3-8B", "weight_version": "step-3"}]
    assert config["config"]["model"] == "Qwen/Qwen3-8B"


def test_status_reports_the_prefix_cache_and_loop_aborts(run, cluster):
    status = cluster.kturn_json("status", str(run[0]))
    assert status["generation"]["loop_aborts"] == 2 and status["generation"]["prompt_tokens"] > 0
    assert "prefix cache:" in cluster.kturn("status", str(run[0])).stdout


def test_cancelling_a_run_aborts_its_requests_in_flight(cluster, db):
    run_id = _run(cluster, cluster.slow_url)
    turn_ids = {t["id"] for t in turns_of(db, run_id)}
    rids = {f"kturn-turn-{i}" for i in turn_ids}
    wait_for(lambda: rids <= set(http_json(f"{cluster.slow_url}/_double/running")), 60, "all four requests to be decoding")
    cluster.kturn("cancel", str(run_id))
    streams = wait_for(lambda: (s := [x for x in http_json(f"{cluster.slow_url}/_double/streams") if x["rid"] in rids]) and len(s) == 4 and s,
                       30, "the cancelled requests to end")
    assert {a["rid"] for a in http_json(f"{cluster.slow_url}/_double/aborts")} == rids
    assert all(s["aborted"] and s["tokens_sent"] < len(ENDLESS) // 4 // 10 for s in streams)
    assert {t["state"] for t in turns_of(db, run_id)} == {"cancelled"}
    assert "no longer generating" in next(cluster.log(name) for name in cluster.processes if name.startswith("generate-"))


def test_an_outage_longer_than_the_retries_is_waited_out_and_nothing_fails(cluster, db):
    """The model server is down for longer than the quick retries last (five attempts, a few seconds
    of backoff). A generate worker with one slot holds its turn (still `generating`, its 6 s lease
    renewed all along) and takes no more messages, so the other turns wait in the queue instead of
    failing one after another; once the server is back on the same address every turn is answered
    and cleaned, and nothing failed."""
    port = int(cluster.double_url.rsplit(":", 1)[1])
    with cluster.stopped("generate"):  # started again below with one slot (-c 1)
        run_id = _run(cluster, cluster.double_url, "--outage-hold", "300")
        cluster.kill("sglang_double")  # connections refused from now on
    worker = [n for n in cluster.processes if n.startswith("generate-")][-1]
    wait_for(lambda: "into a hold of up to 300 s" in cluster.log(worker), 60, "the worker to hold its turn")
    for _ in range(5):  # 25 s: longer than the quick retries, and than four leases
        time.sleep(5)
        held = rows(db, """SELECT t.state, t.lease_expires_at > now() AS leased FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id
                           WHERE tr.run_id = :run ORDER BY t.state""", run=run_id)
        assert held == [{"state": "generating", "leased": True}] + [{"state": "pending", "leased": None}] * 3
    cluster.start_double(SCRIPT, "--token-rate", str(TOKEN_RATE), "--weight-version", "step-3", port=port)
    turns = _cleaned(db, run_id)
    assert all(t["raw_response"] and t["state"] != "failed" for t in turns)
    assert rows(db, "SELECT count(*) AS failed FROM trajectories WHERE run_id = :run AND status = 'failed'", run=run_id) == [{"failed": 0}]
