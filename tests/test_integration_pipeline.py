"""The whole pipeline on real parts: Postgres, Redis, one Celery worker process per queue, Flower,
and the SGLang test double standing in for the model server."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from sqlalchemy import text

from orchestrator.problems import BUNDLED_DIR
from orchestrator.stages import PREFLIGHT_QUEUE, STAGES
from tests.cluster import http_json, kill_in_the_middle_of_work, pool_children, rows, run_args, started, turns_of, wait_for

pytestmark = pytest.mark.integration

DEMO = {(a["problem"], a["turn"]): a["text"] for a in map(json.loads, (BUNDLED_DIR.parent / "demo_answers.jsonl").read_text().splitlines())}
LOOPING = "I will write a custom C++ kernel for ReLU.\n" + "Let me think about the best approach.\n" * 300
FENCE_TAIL = "\n```\n```\n```\n```\n"

# The double picks the answer whose key is the longest one found in the prompt: the problem's
# source selects turn 0, the feedback stored from the previous turn selects the later ones.
SCRIPT = {
    "torch.relu(x)": [LOOPING],
    "began repeating itself": [DEMO[("level1/1_ReLU", 1)]],
    "Your previous answer failed to compile": [DEMO[("level1/1_ReLU", 2)]],
    "a * self.alpha + b": [DEMO[("level1/2_Scaled_Add", 0)]],
    "compiled but is incorrect": [DEMO[("level1/2_Scaled_Add", 1)] + FENCE_TAIL],
    "Your previous answer is correct": [DEMO[("level1/2_Scaled_Add", 2)]],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url):
    with started(tmp_path_factory.mktemp("cluster"), postgres_url, redis_url, SCRIPT) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def finished_run(cluster):
    started = time.monotonic()
    result = cluster.kturn_json(*run_args(cluster, samples=2, turns=3), "--wait", timeout=900)
    return result["run"], time.monotonic() - started


def loads_torch(pid: int) -> bool:
    return "libtorch" in open(f"/proc/{pid}/maps").read()


def test_only_pool_processes_that_compared_outputs_load_torch(finished_run, cluster):
    """No worker imports torch before it takes tasks (seconds of start-up: a restarted worker is
    back at work sooner); an evaluate pool process imports it at its first comparison of outputs,
    which this run's correct and incorrect answers reached. The build stage's parent never needs it."""
    for name, process in cluster.processes.items():
        queue = name.split("-")[0]
        if queue not in ("generate", "clean", "build", "evaluate"):
            continue
        children = pool_children(process.pid)
        assert children, name
        assert not loads_torch(process.pid), name
        assert {loads_torch(pid) for pid in children} == {queue == "evaluate"}, name


def test_every_turn_is_stored_once_and_done(finished_run, db):
    run_id, wall = finished_run
    print(f"2 problems x 2 samples x 3 turns: {wall:.1f} s")
    turns = turns_of(db, run_id)
    keys = Counter((t["problem"], t["sample_index"], t["turn_index"]) for t in turns)
    assert sorted(keys) == sorted((p, s, k) for p in ("1_ReLU", "2_Scaled_Add") for s in (0, 1) for k in range(3))
    assert set(keys.values()) == {1}
    assert {t["state"] for t in turns} == {"done"}
    assert rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id) == [{"status": "completed"}]
    assert all(t["generated_at"] and t["cleaned_at"] and t["built_at"] and t["evaluated_at"] for t in turns)


def test_stage_results_are_stored(finished_run, db):
    by_key = {(t["problem"], t["sample_index"], t["turn_index"]): t for t in turns_of(db, finished_run[0])}
    for sample in (0, 1):
        looping, broken, fixed = (by_key[("1_ReLU", sample, k)] for k in range(3))
        assert looping["degenerate"] is True and looping["code"] is None and looping["reward"] == 0.0
        # scored by the clean stage: claimed by generate and clean only, no build or evaluate task
        assert looping["error_kind"] == "no_code" and looping["attempts"] == 2 and looping["built_at"] and looping["evaluated_at"]
        # Aborted while it streamed: cut after its first line, with the loop's onset on record.
        assert looping["finish_reason"]["type"] == "loop" and looping["loop_onset"] == LOOPING.index("Let me")
        assert looping["repeats"] >= 20 and looping["chars_removed"] > 0
        assert broken["compiled"] is False and broken["error_kind"] == "compile_error" and "zero" in broken["error"]
        assert fixed["correct"] is True and fixed["thinking"] and "<think>" not in fixed["cleaned_response"]
        wrong, right, again = (by_key[("2_Scaled_Add", sample, k)] for k in range(3))
        assert wrong["compiled"] is True and wrong["correct"] is False and wrong["evaluation"]["details"]["max_abs_diff"] > 0
        assert right["correct"] is True and right["runtime_ms"] > 0 and right["baseline_ms"] > 0
        assert right["finish_reason"] == {"type": "stop", "matched": "```\n```"}
        assert again["correct"] is True


def test_builds_are_made_by_the_build_worker_and_travel_through_postgres(finished_run, db):
    """The evaluate worker has a cache of its own (no filesystem shared with the build worker):
    every extension it loads was built by the build worker and reached it through Postgres."""
    with_code = [t for t in turns_of(db, finished_run[0]) if t["code"] and "load_inline" in t["code"]]
    assert with_code
    for turn in with_code:
        made = turn["prebuild"]["builds"]
        loaded = turn["evaluation"]["details"]["builds"]
        assert [b["key"] for b in made] == [b["key"] for b in loaded]
        assert all(b["cached"] for b in loaded), loaded  # found ready, nothing compiled on the evaluate host
        assert [b["ok"] for b in made] == [b["ok"] for b in loaded]
    travelled = rows(db, """SELECT count(DISTINCT b.key) AS n FROM builds b JOIN turn_builds tb ON tb.key = b.key
                            JOIN turns t ON t.id = tb.turn_id JOIN trajectories tr ON tr.id = t.trajectory_id
                            WHERE tr.run_id = :run""", run=finished_run[0])[0]["n"]
    assert travelled >= 2  # a failed build (the compile error) and working ones
    skipped = [t for t in turns_of(db, finished_run[0]) if t["code"] and "load_inline" not in t["code"]]
    assert all(t["prebuild"] == {"skipped": "no extension to build"} for t in skipped)


def test_next_prompt_is_built_from_stored_feedback(finished_run, db):
    turns = turns_of(db, finished_run[0])
    by_key = {(t["problem"], t["sample_index"], t["turn_index"]): t for t in turns}
    for (problem, sample, k), turn in by_key.items():
        if k == 0:
            continue
        previous = by_key[(problem, sample, k - 1)]
        messages = turn["prompt_messages"]
        assert messages[-1] == {"role": "user", "content": previous["feedback"]}
        assert messages[-2] == {"role": "assistant", "content": previous["cleaned_response"]}
        assert len(messages) == 2 + 2 * k
    assert "repeating itself" in by_key[("1_ReLU", 0, 0)]["feedback"]
    assert "failed to compile" in by_key[("1_ReLU", 0, 1)]["feedback"]


def test_returns_are_discounted_rewards(finished_run, db):
    turns = turns_of(db, finished_run[0])
    for key in {(t["problem"], t["sample_index"]) for t in turns}:
        trajectory = [t for t in turns if (t["problem"], t["sample_index"]) == key]
        rewards = [t["reward"] for t in trajectory]
        expected = rewards[0] + 0.4 * rewards[1] + 0.16 * rewards[2]
        each_turn = [expected, rewards[1] + 0.4 * rewards[2], rewards[2]]
        assert [t["return"] for t in trajectory] == pytest.approx(each_turn, abs=1e-6)  # stored rounded to 6 decimals
        assert trajectory[0]["trajectory_return"] == pytest.approx(expected, abs=1e-6)
        assert trajectory[0]["trajectory_status"] == "completed"


def test_server_received_the_run_sampling_parameters(finished_run, cluster):
    received = [r for r in cluster.double_requests() if "kturn-turn-" in str(r.get("rid"))]
    assert len(received) >= 12
    for body in received:
        params = body["sampling_params"]
        assert params["repetition_penalty"] == 1.1 and params["max_new_tokens"] == 8192
        assert params["stop"] == ["```\n```", "```python\n```python", "\n\n\n\n"]
        assert params["temperature"] == 0.6 and params["top_p"] == 0.95 and params["top_k"] == 20
        assert body["text"].startswith("<|im_start|>system\n") and body["text"].endswith("<think>\n\n</think>\n\n")


def test_status_command_shows_the_run(finished_run, cluster):
    run_id = finished_run[0]
    status = cluster.kturn_json("status", str(run_id))
    assert status["status"] == "completed" and len(status["turns"]) == 12
    assert str(run_id) in cluster.kturn("runs").stdout
    assert "done" in cluster.kturn("status", str(run_id)).stdout


def test_flower_sees_workers_per_queue_and_the_run_tasks(finished_run, cluster, db):
    url = cluster.start_flower()
    workers = wait_for(lambda: _every_queue_listed(url), 60, "Flower to list a worker of every queue")
    assert set().union(*workers.values()) == QUEUES
    assert all("preflight" in queues for queues in workers.values() if "evaluate" in queues)  # every evaluate worker takes pre-flights
    turn_ids = {t["id"] for t in turns_of(db, finished_run[0])}
    # Flower learns tasks from events: run a small new run while it watches.
    cluster.kturn(*run_args(cluster, 1, 1, "--id", "2"), "--wait")
    # A worker publishes its task events in batches (EVENT_FLUSH_S apart at most), so the last
    # successes may reach Flower after `--wait` has seen the run end: wait for them, not for the first.
    tasks = wait_for(lambda: _every_stage_succeeded([t for t in http_json(f"{url}/api/tasks").values() if t.get("name", "").startswith("kturn.")]),
                     60, "Flower to see a task of every stage, each succeeded")
    assert not {int(t["args"].strip("[]()")) for t in tasks} & turn_ids  # the new run's turns, seen live


def _every_stage_succeeded(tasks: list[dict]) -> list[dict] | None:
    """`tasks` once they include every stage's and all succeeded; None until then."""
    every_stage = {"kturn.generate", "kturn.clean", "kturn.build", "kturn.evaluate"} <= {t["name"] for t in tasks}
    return tasks if every_stage and all(t["state"] == "SUCCESS" for t in tasks) else None


QUEUES = {stage.queue for stage in STAGES} | {PREFLIGHT_QUEUE}


def _every_queue_listed(url: str) -> dict[str, set[str]] | None:
    """Each worker Flower lists with its queues, once they include every queue; None until then: a
    refresh waits a second for the workers' replies, and a busy worker's may come after it."""
    workers = http_json(f"{url}/api/workers?refresh=1", timeout=30)
    queues = {name: {q["name"] for q in info["active_queues"]} for name, info in workers.items() if info.get("active_queues")}
    return queues if set().union(*queues.values()) >= QUEUES else None


def test_sigkilled_worker_loses_and_duplicates_nothing(cluster, db):
    run_id = cluster.kturn_json(*run_args(cluster, 2, 2, "--id", "1"))["run"]
    victim = next(name for name in cluster.processes if name.startswith("evaluate-"))
    killed = kill_in_the_middle_of_work(db, lambda: {child: victim for child in pool_children(cluster.processes[victim].pid)},
                                        lambda _holder, _pool: cluster.kill(victim), within_s=300)  # while it evaluates, not after it stored
    cluster.start_worker("evaluate")
    def finished():
        cluster.kturn("reconcile", "--older-than", "5")
        return rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id)[0]["status"] == "completed"
    wait_for(finished, 300, "the run to complete after the kill", interval=2)
    turns = turns_of(db, run_id)
    keys = Counter((t["sample_index"], t["turn_index"]) for t in turns)
    assert keys == Counter({(s, k): 1 for s in (0, 1) for k in (0, 1)})
    assert {t["state"] for t in turns} == {"done"}, [(t["id"], t["state"], t["attempts"], t["error"]) for t in turns]
    assert next(t for t in turns if t["id"] == killed["id"])["attempts"] > killed["attempts"]  # claimed again after the kill


def test_lost_messages_are_recovered_by_reconcile(cluster, db):
    with cluster.stopped("generate"):  # the message is lost before any worker takes it
        run_id = cluster.kturn_json(*run_args(cluster, 1, 1, "--id", "2"))["run"]
        cluster.purge("generate")
    time.sleep(1)
    assert rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id)[0]["status"] == "running"
    report = cluster.kturn_json("reconcile", "--older-than", "0")
    assert ["generate", rows(db, "SELECT t.id FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = :run", run=run_id)[0]["id"]] in report["requeued"]
    wait_for(lambda: rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id)[0]["status"] == "completed", 300, "the recovered run")


def test_dead_server_is_refused_before_the_run_starts(cluster, db):
    args = run_args(cluster, 1, 1, "--id", "2")
    args[args.index("--url") + 1] = "http://127.0.0.1:9"  # nothing listens on the discard port
    runs_before = rows(db, "SELECT count(*) AS n FROM runs")
    result = cluster.kturn(*args, check=False)
    assert result.returncode == 2 and "server at http://127.0.0.1:9 is unreachable" in result.stderr
    assert rows(db, "SELECT count(*) AS n FROM runs") == runs_before  # nothing was created


def test_reclean_reapplies_the_cleaner_without_touching_raw_answers(finished_run, cluster, db):
    run_id = finished_run[0]
    [target] = [t for t in turns_of(db, run_id) if (t["problem"], t["sample_index"], t["turn_index"]) == ("1_ReLU", 0, 2)]
    with db.begin() as connection:  # as if an older cleaner had extracted nothing
        connection.execute(text("UPDATE turns SET code = NULL, degenerate = TRUE WHERE id = :id"), {"id": target["id"]})
    report = cluster.kturn_json("reclean", str(run_id))
    assert report["turns"] == 12
    assert [c["turn_id"] for c in report["changed"]] == [target["id"]]
    [after] = [t for t in turns_of(db, run_id) if t["id"] == target["id"]]
    assert after["code"] == target["code"] and after["degenerate"] is False
    assert after["raw_response"] == target["raw_response"]


def test_cancel_ends_open_turns_and_reconcile_leaves_them(cluster, db):
    with cluster.stopped("generate"):  # the turns stay pending; their messages, delivered later, find nothing to claim
        run_id = cluster.kturn_json(*run_args(cluster, 2, 3))["run"]
        assert "cancelled (4 open turn(s))" in cluster.kturn("cancel", str(run_id)).stdout
    turns = turns_of(db, run_id)
    assert {t["state"] for t in turns} == {"cancelled"} and {t["trajectory_status"] for t in turns} == {"cancelled"}
    assert rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id) == [{"status": "cancelled"}]
    report = cluster.kturn_json("reconcile", "--older-than", "0")
    assert not {turn_id for _, turn_id in report["requeued"]} & {t["id"] for t in turns}


def test_early_stop_ends_the_trajectory_at_the_rewarding_turn(cluster, db):
    # Scaled add: turn 0 is incorrect (reward 0.1), turn 1 correct (reward >= 0.4): a threshold of
    # 0.4 ends the trajectory there instead of running all three turns.
    args = run_args(cluster, 1, 3, "--id", "2")
    args[args.index("--early-stop") + 1] = "0.4"
    run_id = cluster.kturn_json(*args, "--wait", timeout=600)["run"]
    turns = turns_of(db, run_id)
    assert [t["turn_index"] for t in turns] == [0, 1], [(t["state"], t["reward"], t["error"]) for t in turns]
    assert turns[0]["reward"] < 0.4 <= turns[1]["reward"]
    assert turns[0]["trajectory_status"] == "completed"
    assert turns[0]["return"] == pytest.approx(turns[0]["reward"] + 0.4 * turns[1]["reward"], abs=1e-6)
