"""Real-format data through real workers: KernelBench's own files (sizes cut down so the CPU runs them
in seconds) as a TritonForge-style slime JSONL with two problems of the same name, their own prompts
used for turn 0, and the model server down in the middle of the run for longer than the retries."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.cluster import rows, started, turns_of, wait_for

pytestmark = pytest.mark.integration

KERNELBENCH = Path(__file__).parent / "data" / "kernelbench"
SMALL = {"batch_size": 8, "in_features": 16, "out_features": 16}
ANSWER = "I would fuse the GEMM, the scale and the batch norm, but here is no code yet."


def small(source: str) -> str:
    """KernelBench's file with its size constants cut down; everything else as it is."""
    for name, value in SMALL.items():
        source = re.sub(rf"^{name} = \d+$", f"{name} = {value}", source, flags=re.M)
    return source


def slime_line(problem_id: int) -> dict:
    source = small((KERNELBENCH / "level2" / f"{problem_id}_Gemm_Scale_BatchNorm.py").read_text())
    prompt = [{"role": "system", "content": "You write Triton kernels."},
              {"role": "user", "content": f"Optimize problem {problem_id} (Gemm_Scale_BatchNorm):\n{source}"}]
    return {"prompt": prompt, "label": source, "instance_id": f"kernelbench_level2_{problem_id}",
            "extra_info": {"level": 2, "problem_id": problem_id, "problem_name": "Gemm_Scale_BatchNorm"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url):
    with started(tmp_path_factory.mktemp("real_data"), postgres_url, redis_url, {"Gemm_Scale_BatchNorm": [ANSWER]}) as cluster:
        yield cluster


def test_a_tritonforge_jsonl_with_shared_names_runs_through_an_outage_with_nothing_failed(cluster, db, tmp_path):
    jsonl = tmp_path / "kernel_bench_triton_level_2.jsonl"
    lines = [slime_line(33), slime_line(39)]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    port = int(cluster.double_url.rsplit(":", 1)[1])
    cluster.kill("sglang_double")
    cluster.start_double({"Gemm_Scale_BatchNorm": [ANSWER]}, "--delay-s", "1.5", port=port)  # each answer takes 1.5 s to begin
    run_id = cluster.kturn_json("run", str(jsonl), "--backend", "triton", "--device", "cpu", "--turns", "2", "--early-stop", "100",
                                "--generator", "sglang", "--url", cluster.double_url, "--first-prompt", "dataset", "--outage-hold", "300")["run"]
    wait_for(lambda: done(db, run_id) >= 1, 60, "a first turn done")
    cluster.kill("sglang_double")  # in the middle of the run, with a generation waiting for its answer
    assert done(db, run_id) < 4
    worker = [n for n in cluster.processes if n.startswith("generate-")][-1]
    wait_for(lambda: "into a hold of up to 300 s" in cluster.log(worker), 60, "the worker to hold its turn")
    time.sleep(20)  # longer than the quick retries
    assert rows(db, "SELECT count(*) AS n FROM trajectories WHERE run_id = :run AND status = 'failed'", run=run_id) == [{"n": 0}]
    cluster.start_double({"Gemm_Scale_BatchNorm": [ANSWER]}, port=port)

    wait_for(lambda: rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id)[0]["status"] != "running", 300, "the run to end")
    assert rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id) == [{"status": "completed"}]
    problems = rows(db, """SELECT p.name, p.problem_key, p.kernelbench_id, p.instance_id FROM problems p
                           JOIN trajectories tr ON tr.problem_id = p.id WHERE tr.run_id = :run ORDER BY p.name""", run=run_id)
    assert problems == [{"name": f"{i}_Gemm_Scale_BatchNorm", "problem_key": f"level2/{i}", "kernelbench_id": i, "instance_id": f"kernelbench_level2_{i}"}
                        for i in (33, 39)]
    turns = turns_of(db, run_id)
    assert [(t["problem"], t["turn_index"], t["state"]) for t in turns] == [(f"{i}_Gemm_Scale_BatchNorm", k, "done") for i in (33, 39) for k in (0, 1)]
    for line, turn0 in zip(lines, [t for t in turns if t["turn_index"] == 0]):
        assert turn0["prompt_messages"] == line["prompt"]  # the dataset's own prompt opened the trajectory
    [listed] = [r for r in cluster.kturn_json("runs") if r["run"] == run_id]
    assert (listed["completed"], listed["failed"], listed["running"]) == (2, 0, 0)


def done(db, run_id: int) -> int:
    return rows(db, """SELECT count(*) AS n FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id
                       WHERE tr.run_id = :run AND t.state = 'done'""", run=run_id)[0]["n"]


RELU = Path(__file__).parents[1] / "orchestrator" / "data" / "problems" / "level1" / "1_ReLU.py"
MAMBA = KERNELBENCH / "level3" / "48_Mamba2ReturnY.py"  # imports einops, which the host lacks


def test_pre_flight_on_the_evaluate_workers_answers_through_the_database_and_feeds_the_run(cluster, db, tmp_path):
    from orchestrator.limits import default_memory_limit_mb

    checked = cluster.kturn("check", str(RELU), str(MAMBA), "--on", "workers", "--json", check=False)
    assert checked.returncode == 1, checked.stderr
    relu, mamba = json.loads(checked.stdout)["problems"]
    assert relu["ok"] and relu["forward_ms"] > 0 and relu["where"].startswith("evaluate-")
    assert relu["memory_limit_mb"] == default_memory_limit_mb("cpu")  # the worker's host decided it (this host, here)
    assert not mamba["ok"] and "No module named 'einops'" in mamba["error"] and mamba["origin"] == str(MAMBA)
    assert rows(db, "SELECT count(*) AS n FROM preflight_requests") == [{"n": 0}]  # read, then deleted

    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "no code"}) + "\n")
    ran = cluster.kturn_json("run", str(RELU), str(MAMBA), "--check-on", "workers", "--skip-bad", "--backend", "cpp", "--device", "cpu",
                             "--turns", "1", "--generator", "replay", "--replay", str(replay), "--memory-limit-mb", "5000", "--wait")
    assert [t["problem"] for t in ran["turns"]] == ["level1/1_ReLU"]
    [config] = rows(db, "SELECT config FROM runs WHERE id = :run", run=ran["run"])
    assert config["config"]["evaluation"]["memory_limit_mb"] == 5000

    with cluster.stopped("evaluate"):
        refused = cluster.kturn("check", str(RELU), "--on", "workers", check=False)
    assert refused.returncode == 2 and "`preflight` queue" in refused.stderr and "--no-check" in refused.stderr
