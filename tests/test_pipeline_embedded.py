"""The stage pipeline in the embedded default (SQLite, in-memory transport), with a replay file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
KTURN = str(Path(sys.executable).with_name("kturn"))


def test_a_crashing_stage_fails_its_turn_with_the_error_and_the_run_ends(tmp_path):
    # Fault injection: at interpreter start (sitecustomize), the clean stage's work is replaced by one
    # that raises, as a bug in kturn would. Everything else is the real embedded pipeline.
    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "fine"}) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    sitecustomize = tmp_path / "sitecustomize.py"
    sitecustomize.write_text(
        "import workers.cleaning.tasks as t\n"
        "def boom(context):\n    raise RuntimeError('cleaner bug')\n"
        "t.clean_turn = boom\n"
    )
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    result = subprocess.run([KTURN, "run", str(ROOT / "orchestrator/data/problems/level1/1_ReLU.py"), "--backend", "cpp", "--device", "cpu",
                             "--generator", "replay", "--replay", str(replay), "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "1 of 1 trajectories failed" in result.stderr, result.stderr
    [turn] = json.loads(result.stdout.splitlines()[-1])["turns"]
    assert turn["state"] == "failed" and turn["trajectory_status"] == "failed"
    assert "internal error in clean: RuntimeError: cleaner bug" in turn["error"]


def test_reconcile_after_an_interrupted_run_hands_on_the_dead_process_turn_at_once_and_resumes_it(tmp_path):
    """The process dies mid-stage (fault injection: the clean stage exits the interpreter), leaving
    its turn claimed under an hour's lease; an immediate `kturn reconcile` sees that the claim's
    process has ended, says so, hands the turn on without waiting for the lease, and the run ends."""
    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "fine"}) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | {"KTURN_LEASE_SECONDS": "3600"}
    crashing = tmp_path / "crash"
    crashing.mkdir()
    (crashing / "sitecustomize.py").write_text("import os\nimport workers.cleaning.tasks as t\nt.clean_turn = lambda context: os._exit(3)\n")
    interrupted = subprocess.run([KTURN, "run", str(ROOT / "orchestrator/data/problems/level1/1_ReLU.py"), "--backend", "cpp", "--device", "cpu",
                                  "--generator", "replay", "--replay", str(replay)], cwd=tmp_path, env=env | {"PYTHONPATH": f"{crashing}{os.pathsep}{ROOT}"},
                                 capture_output=True, text=True, timeout=300)
    assert interrupted.returncode == 3

    resumed = subprocess.run([KTURN, "reconcile"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 claim(s) of ended worker processes handed on" in resumed.stdout and "turn 1 to clean" in resumed.stdout, resumed.stdout
    status = json.loads(subprocess.run([KTURN, "status", "1", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60).stdout)
    assert status["status"] != "running" and [t["state"] for t in status["turns"]][0] == "done"


def test_a_failed_trajectory_is_counted_keeps_its_scored_returns_and_is_revived_by_retry(tmp_path):
    """Turn 0 is scored, turn 1 fails (the replay file has no answer for it): the run ends as
    completed_with_failures and exits 1, turn 0 keeps a return, `kturn runs` counts the failure;
    once the answer exists, `kturn retry` re-runs turn 1 alone and the run completes."""
    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "no code here"}) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}

    def kturn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([KTURN, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    first = kturn("run", str(ROOT / "orchestrator/data/problems/level1/1_ReLU.py"), "--backend", "cpp", "--device", "cpu", "--turns", "2",
                  "--early-stop", "100", "--generator", "replay", "--replay", str(replay), "--json")
    assert first.returncode == 1 and "1 of 1 trajectories failed" in first.stderr and "kturn retry 1" in first.stderr
    turn0, turn1 = json.loads(first.stdout.splitlines()[-1])["turns"]
    assert turn0["state"] == "done" and turn0["reward"] == 0.0 and turn0["return"] == 0.0  # scored: a return, though the trajectory failed
    assert turn1["state"] == "failed" and turn1["return"] is None and "generation failed" in turn1["error"]
    [listed] = json.loads(kturn("runs", "--json").stdout)
    assert listed["status"] == "completed_with_failures" and (listed["failed"], listed["completed"], listed["running"]) == (1, 0, 0)

    with replay.open("a") as answers:
        answers.write(json.dumps({"problem": "level1/1_ReLU", "turn": 1, "text": "still no code"}) + "\n")
    retried = kturn("retry", "1", "--json")
    assert retried.returncode == 0, retried.stderr
    again0, again1 = json.loads(retried.stdout.splitlines()[-1])["turns"]
    # the same turn: a new claim by generate, then by clean, which scores an answer with no code (no build, no evaluation)
    assert again0["turn_id"] == turn0["turn_id"] and again1["turn_id"] == turn1["turn_id"]
    assert again1["state"] == "done" and again1["attempts"] == turn1["attempts"] + 2 and again1["trajectory_status"] == "completed"
    assert json.loads(kturn("runs", "--json").stdout)[0]["status"] == "completed"
    assert "nothing to retry" in kturn("retry", "1").stdout
