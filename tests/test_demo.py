"""`kturn demo`, as a new user runs it: no servers, no GPU, the embedded default."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


KTURN = str(Path(sys.executable).with_name("kturn"))
ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The directory `kturn demo` ran in, and what it printed."""
    tmp_path = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = subprocess.run([KTURN, "demo"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    print(f"kturn demo: {time.monotonic() - started:.1f} s")
    return tmp_path, result


def test_demo_runs_three_turns_with_the_embedded_default(demo):
    tmp_path, result = demo
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


def test_report_and_exports_work_on_the_embedded_demo(demo):
    """The analysis views exist on SQLite too: `kturn demo` then `kturn report 1`."""
    tmp_path, _ = demo
    report = json.loads(subprocess.run([KTURN, "report", "1", "--json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120).stdout)
    turn0, turn1, turn2 = report["turns"]
    assert turn0["degenerate_rate"] == 0.5 and turn0["finish"] == {"length": 1, "end_of_turn": 1}
    assert [t["funnel"]["correct"] for t in report["turns"]] == [0.0, 0.5, 1.0]
    assert turn1["progress"] == {"improved": 1, "held": 1, "regressed": 0}
    # Turn 2: ReLU goes from a compile error to correct. The scaled add was correct at turn 1 already:
    # whether its turn 2 earns more depends on this machine's timings (both may reach the speedup cap).
    with sqlite3.connect(tmp_path / ".kturn" / "kturn.sqlite") as connection:
        [(add_1, add_2)] = connection.execute("""
            SELECT MAX(CASE WHEN t.turn_index = 1 THEN t.reward END), MAX(CASE WHEN t.turn_index = 2 THEN t.reward END)
            FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id JOIN problems p ON p.id = tr.problem_id WHERE p.name = '2_Scaled_Add'""").fetchall()
    add_progress = "improved" if add_2 > add_1 + 1e-9 else "regressed" if add_2 < add_1 - 1e-9 else "held"
    expected = {"improved": 1, "held": 0, "regressed": 0}  # ReLU
    expected[add_progress] += 1
    assert turn2["progress"] == expected
    assert report["trajectories"]["first_to_last"] == {"improved": 2, "held": 0, "regressed": 0}
    shown = subprocess.run([KTURN, "report", "1", "--plot", "demo.png"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "funnel" not in shown.stderr and (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    export = subprocess.run([KTURN, "export", "1", "--format", "sft", "--json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in (tmp_path / "run1-sft.jsonl").read_text().splitlines()]
    assert json.loads(export.stdout)["items"] == len(lines) == 3  # the correct turns: ReLU turn 2, scaled add turns 1 and 2
    assert all(line["messages"][-1]["role"] == "assistant" and "ModelNew" in line["messages"][-1]["content"] for line in lines)
    with sqlite3.connect(tmp_path / ".kturn" / "kturn.sqlite") as connection:
        [(compile_rate,)] = connection.execute("SELECT compile_rate FROM run_summary WHERE run_id = 1").fetchall()
    assert compile_rate == report["overall"]["funnel"]["compiled"] == 4 / 6


def test_the_cuda_demo_answers_are_what_the_gpu_demo_needs():
    """`kturn demo --device cuda` replays these on a GPU host (scripts/gpu_check.sh runs it): a
    degenerate answer, a CUDA compile error, an incorrect kernel and correct ones, each cleaned
    to code written for CUDA."""
    from workers.cleaning import clean_response
    from workers.evaluation.static_checks import detect_backend

    answers = [json.loads(line) for line in (ROOT / "orchestrator" / "data" / "demo_answers_cuda.jsonl").read_text().splitlines()]
    cleaned = {(a["problem"], a["turn"]): clean_response(a["text"]) for a in answers}
    assert set(cleaned) == {(p, k) for p in ("level1/1_ReLU", "level1/2_Scaled_Add") for k in range(3)}
    assert cleaned[("level1/1_ReLU", 0)].degenerate and cleaned[("level1/1_ReLU", 0)].code is None
    codes = {key: result.code for key, result in cleaned.items() if key != ("level1/1_ReLU", 0)}
    assert all(code and detect_backend(code) == "cuda" for code in codes.values())
    assert ": ZERO;" in codes[("level1/1_ReLU", 1)] and ": 0.0f;" in codes[("level1/1_ReLU", 2)]
    assert "b.contiguous(), 1.0)" in codes[("level1/2_Scaled_Add", 0)]


def test_the_cuda_demo_says_plainly_when_there_is_no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: scripts/gpu_check.sh runs the CUDA demo")
    result = subprocess.run([KTURN, "demo", "--device", "cuda"], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


def test_status_fits_80_columns_when_piped(demo):
    tmp_path, _ = demo
    status = subprocess.run([KTURN, "status", "1"], cwd=tmp_path, env=ENV | {"COLUMNS": "80"}, capture_output=True, text=True, timeout=120)
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and max(map(len, lines)) <= 80
    assert sum(" done " in line for line in lines) == 6 and "level1/2_Scaled_Add" in status.stdout
