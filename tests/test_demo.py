"""`kturn demo`, as a new user runs it: no servers, no GPU, the embedded default."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_three_turns_with_the_embedded_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).with_name("kturn")), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"kturn demo: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "level1/1_ReLU" in result.stdout and "done" in result.stdout

    database = tmp_path / ".kturn" / "kturn.sqlite"
    with sqlite3.connect(database) as connection:
        turns = connection.execute("""
            SELECT p.name, t.turn_index, t.state, t.degenerate, t.compiled, t.correct, t.error_kind, t.reward
            FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id JOIN problems p ON p.id = tr.problem_id
            ORDER BY p.name, t.turn_index""").fetchall()
        run_status = connection.execute("SELECT status FROM runs").fetchall()
    assert run_status == [("completed",)]
    assert [t[:3] for t in turns] == [(n, k, "done") for n in ("1_ReLU", "2_Scaled_Add") for k in range(3)]
    relu, add = turns[:3], turns[3:]
    assert relu[0][3] == 1 and relu[0][7] == 0.0  # the degenerate markdown loop: cut, no code, no reward
    assert relu[1][4] == 0 and relu[1][6] == "compile_error"
    assert relu[2][5] == 1 and relu[2][7] >= 0.4
    assert add[0][4] == 1 and add[0][5] == 0
    assert add[1][5] == 1 and add[2][5] == 1
