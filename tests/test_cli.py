"""The `kturn` commands whose output is a contract, run as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "evaluation_corpus"
KTURN = str(Path(sys.executable).with_name("kturn"))
CLEAN_KEYS = {"file", "degenerate", "severity", "truncated_at", "cleaned", "thinking", "code", "warnings"}
EVAL_KEYS = {"compiled", "correct", "runtime_ms", "baseline_ms", "speedup", "reward", "flags", "error", "feedback"}


def kturn(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}, **(env or {})}
    return subprocess.run([KTURN, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def test_clean_json_one_object_per_file(tmp_path):
    looping = tmp_path / "looping.md"
    looping.write_text("Here is the kernel:\n\n" + "```python\n" * 300)
    good = tmp_path / "good.md"
    good.write_text("<think>\nplan\n</think>\n\n```python\nclass ModelNew:\n    pass\n```\n")
    result = kturn("clean", str(looping), str(good), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert set(first) == CLEAN_KEYS == set(second)
    assert first["file"] == str(looping) and first["degenerate"] is True and first["truncated_at"] is not None and first["code"] is None
    assert second["degenerate"] is False and second["thinking"] == "plan" and "class ModelNew" in second["code"]
    assert "<think>" not in second["cleaned"]


def test_clean_reads_stdin(tmp_path):
    result = kturn("clean", "--json", cwd=tmp_path, stdin="```python\nclass ModelNew:\n    pass\n```\n")
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["file"] == "-" and "class ModelNew" in row["code"]


def test_eval_json_for_a_failing_solution_exits_zero(tmp_path):
    result = kturn("eval", "--problem", str(CORPUS / "problems" / "relu.py"), "--solution", str(CORPUS / "solutions" / "python_syntax_error.py"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert set(verdict) == EVAL_KEYS
    assert verdict["compiled"] is False and verdict["reward"] == 0.0 and verdict["error"]
    assert "Fix the error" in verdict["feedback"]


def test_eval_of_a_problem_whose_reference_fails_gives_no_verdict_and_blames_the_reference(tmp_path):
    problem = tmp_path / "needs_einops.py"
    problem.write_text((CORPUS / "problems" / "relu.py").read_text().replace("import torch\n", "import torch\nimport einops_is_not_here\n", 1))
    result = kturn("eval", "--problem", str(problem), "--solution", str(CORPUS / "solutions" / "honest_triton_relu.py"),
                   "--backend", "triton", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "reference_error" in result.stderr and "einops_is_not_here" in result.stderr and "needs_einops.py" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("eval", "--problem", "missing.py", "--solution", "missing.py", "--json"),
        ("eval", "--problem", str(CORPUS / "problems" / "relu.py"), "--solution", str(CORPUS / "solutions" / "segfault.py"), "--device", "tpu"),
        ("eval", "--problem", str(CORPUS / "problems" / "relu.py"), "--solution", str(CORPUS / "solutions" / "segfault.py"), "--backend", "cuda"),
    ],
)
def test_eval_rejects_unusable_arguments(tmp_path, args):
    result = kturn(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""


def test_run_with_a_bad_problem_creates_nothing(tmp_path):
    problems = tmp_path / "level1"
    problems.mkdir()
    (problems / "1_Good.py").write_text((ROOT / "orchestrator/data/problems/level1/1_ReLU.py").read_text())
    (problems / "2_Bad.py").write_text("import torch\nclass Model(torch.nn.Module):\n    pass\n")
    result = kturn("run", str(problems), "--backend", "cpp", "--device", "cpu", "--generator", "replay",
                   "--replay", str(ROOT / "orchestrator/data/demo_answers.jsonl"), cwd=tmp_path)
    assert result.returncode == 2
    assert "2_Bad.py" in result.stderr and "get_inputs" in result.stderr
    assert json.loads(kturn("runs", "--json", cwd=tmp_path).stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--generator", "sglang"), "needs --url"),
        (("--generator", "sglang", "--url", "http://x", "--repetition-penalty", "3"), "repetition_penalty"),
        (("--generator", "sglang", "--url", "http://x", "--temperature", "0"), "temperature"),
    ],
)
def test_run_rejects_bad_settings_clearly(tmp_path, args, message):
    result = kturn("run", str(ROOT / "orchestrator/data/problems"), "--backend", "cpp", "--device", "cpu", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_unreachable_database_is_a_clear_error(tmp_path):
    result = kturn("runs", cwd=tmp_path, env={"DATABASE_URL": "postgresql://kturn:secret@127.0.0.1:1/kturn", "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "secret" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("given", "missing"), [("DATABASE_URL", "REDIS_URL"), ("REDIS_URL", "DATABASE_URL")])
def test_only_one_of_the_two_urls_is_a_clear_error(tmp_path, given, missing):
    """One URL alone would store to the embedded SQLite while enqueueing to the real Redis (or the reverse)."""
    url = {"DATABASE_URL": "postgresql://kturn@127.0.0.1:1/kturn", "REDIS_URL": "redis://127.0.0.1:1/0"}[given]
    result = kturn("runs", cwd=tmp_path, env={given: url})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{given} is set but {missing} is not" in result.stderr
    assert not (tmp_path / ".kturn").exists()  # nothing embedded was created on the way


def test_run_with_a_malformed_replay_file_creates_nothing(tmp_path):
    replay = tmp_path / "answers.jsonl"
    replay.write_text('{"problem": "level1/1_ReLU", "turn": 0, "text": "ok"}\nnot json\n')
    result = kturn("run", str(ROOT / "orchestrator/data/problems"), "--backend", "cpp", "--device", "cpu", "--generator", "replay", "--replay", str(replay), cwd=tmp_path)
    assert result.returncode == 2 and "answers.jsonl" in result.stderr and "2" in result.stderr
    assert json.loads(kturn("runs", "--json", cwd=tmp_path).stdout) == []


KERNELBENCH = ROOT / "tests" / "data" / "kernelbench"
BUNDLED_RELU = ROOT / "orchestrator/data/problems/level1/1_ReLU.py"
MAMBA = KERNELBENCH / "level3" / "48_Mamba2ReturnY.py"  # KernelBench's own file: it imports einops, which the host lacks


def test_check_runs_each_reference_once_says_why_one_cannot_run_and_caches(tmp_path):
    env = {"KTURN_CACHE_DIR": str(tmp_path / "cache")}
    first = kturn("check", str(BUNDLED_RELU), str(MAMBA), "--json", cwd=tmp_path, env=env)
    assert first.returncode == 1, first.stderr
    relu, mamba = json.loads(first.stdout)["problems"]
    assert relu["ok"] and relu["forward_ms"] > 0 and not relu["cached"]
    assert not mamba["ok"] and not mamba["transient"] and "No module named 'einops'" in mamba["error"] and mamba["origin"] == str(MAMBA)
    again = json.loads(kturn("check", str(BUNDLED_RELU), str(MAMBA), "--json", cwd=tmp_path, env=env).stdout)["problems"]
    assert [p["cached"] for p in again] == [True, True] and again[1]["error"] == mamba["error"]
    table = kturn("check", str(BUNDLED_RELU), str(MAMBA), cwd=tmp_path, env=env | {"COLUMNS": "100"})
    assert "level3/48_Mamba2ReturnY" in table.stdout and "einops" in table.stdout and "forward ms" in table.stdout


def test_check_says_where_it_cannot_run(tmp_path):
    on_workers = kturn("check", str(BUNDLED_RELU), "--on", "workers", cwd=tmp_path)
    assert on_workers.returncode == 2 and "needs a cluster" in on_workers.stderr
    import torch

    if not torch.cuda.is_available():
        cuda_here = kturn("check", str(BUNDLED_RELU), "--device", "cuda", cwd=tmp_path)
        assert cuda_here.returncode == 2 and "no CUDA GPU on this host" in cuda_here.stderr and "--check-on workers" in cuda_here.stderr


def test_run_refuses_a_problem_that_fails_pre_flight_and_skip_bad_runs_the_rest(tmp_path):
    replay = tmp_path / "answers.jsonl"
    replay.write_text(json.dumps({"problem": "level1/1_ReLU", "turn": 0, "text": "no code"}) + "\n")
    args = ("run", str(BUNDLED_RELU), str(MAMBA), "--backend", "cpp", "--device", "cpu", "--turns", "1", "--generator", "replay", "--replay", str(replay))
    refused = kturn(*args, cwd=tmp_path)
    assert refused.returncode == 2 and str(MAMBA) in refused.stderr and "einops" in refused.stderr and "--skip-bad" in refused.stderr
    assert json.loads(kturn("runs", "--json", cwd=tmp_path).stdout) == []
    ran = kturn(*args, "--skip-bad", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert [t["problem"] for t in json.loads(ran.stdout.splitlines()[-1])["turns"]] == ["level1/1_ReLU"]


def test_run_help_shows_the_limits_and_their_host_derived_defaults(tmp_path):
    shown = " ".join(kturn("run", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout.replace("│", " ").split())
    assert "--memory-limit-mb" in shown and "host's RAM" in shown and "--timeout" in shown and "20x the longest batch a reference took in pre-flight" in shown and "--skip-bad" in shown


def test_the_cli_freezes_its_objects_at_exit_instead_of_collecting_them():
    """The interpreter's collections while it shuts down walked every object the imports made,
    some 0.3 s of CPU per command; frozen last thing, they are skipped."""
    code = "import atexit, gc, orchestrator.cli; atexit._run_exitfuncs(); print(gc.get_freeze_count())"
    frozen = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert int(frozen.stdout) > 10_000
