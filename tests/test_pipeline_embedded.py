"""The stage pipeline in the embedded default (SQLite, in-memory transport), with a replay file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    assert result.returncode == 0, result.stderr
    [turn] = json.loads(result.stdout.splitlines()[-1])["turns"]
    assert turn["state"] == "failed" and turn["trajectory_status"] == "failed"
    assert "internal error in clean: RuntimeError: cleaner bug" in turn["error"]


def test_reconcile_after_an_interrupted_run_says_what_it_waits_for_then_resumes_it(tmp_path):
    """The process dies mid-stage (fault injection: the clean stage exits the interpreter), leaving
    its turn claimed under a live lease; an immediate `kturn reconcile` must say it waits for that
    lease and until when, and once the lease runs out it hands the turn on and the run ends."""
    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "fine"}) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | {"KTURN_LEASE_SECONDS": "4"}
    crashing = tmp_path / "crash"
    crashing.mkdir()
    (crashing / "sitecustomize.py").write_text("import os\nimport workers.cleaning.tasks as t\nt.clean_turn = lambda context: os._exit(3)\n")
    interrupted = subprocess.run([KTURN, "run", str(ROOT / "orchestrator/data/problems/level1/1_ReLU.py"), "--backend", "cpp", "--device", "cpu",
                                  "--generator", "replay", "--replay", str(replay)], cwd=tmp_path, env=env | {"PYTHONPATH": f"{crashing}{os.pathsep}{ROOT}"},
                                 capture_output=True, text=True, timeout=300)
    assert interrupted.returncode == 3

    waiting = subprocess.run([KTURN, "reconcile"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert waiting.returncode == 0, waiting.stderr
    assert "waiting for 1 lease(s)" in waiting.stdout and "cleaning until" in waiting.stdout and "UTC (in 0m 0" in waiting.stdout
    time.sleep(4.5)
    resumed = json.loads(subprocess.run([KTURN, "reconcile", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300).stdout)
    assert len(resumed["expired"]) == 1 and resumed["leased"] == []
    status = json.loads(subprocess.run([KTURN, "status", "1", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60).stdout)
    assert status["status"] != "running" and [t["state"] for t in status["turns"]][0] == "done"
