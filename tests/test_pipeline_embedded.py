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
    assert result.returncode == 0, result.stderr
    [turn] = json.loads(result.stdout.splitlines()[-1])["turns"]
    assert turn["state"] == "failed" and turn["trajectory_status"] == "failed"
    assert "internal error in clean: RuntimeError: cleaner bug" in turn["error"]
