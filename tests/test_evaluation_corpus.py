"""End-to-end: every case of the adversarial corpus through evaluate() on CPU.

All cases run once per session, two at a time (2 cores), sharing one extensions
directory so the common C++ block is compiled once. Individual tests then assert on the
stored results.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation_corpus import BY_NAME, CASES, PROBLEMS, SOLUTIONS, Case
from workers.evaluation import EvalResult, EvalSettings, Timing, evaluate, fingerprint_key
from workers.evaluation.flags import DEFAULT_STRICT_FLAGS, KERNEL_REQUIREMENT_FLAGS
from workers.evaluation.sandbox.cgroups import Group

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = {"DATABASE_URL": "postgresql://kturn:secret@db/kturn", "REDIS_URL": "redis://:secret@redis:6379/0"}
# whichever test runs first waits for the whole corpus (~80 evaluations, a dozen builds) in its set-up
pytestmark = pytest.mark.timeout(1800)
# small and quick: the corpus asserts verdicts, not performance
BASE_SETTINGS = {"warmup_runs": 1, "timing_trials": 5, "run_timeout_s": 60.0, "compile_timeout_s": 300.0}


def settings_for(case: Case, extensions_dir: str) -> EvalSettings:
    return EvalSettings(**{**BASE_SETTINGS, "backend": case.backend, "extensions_dir": extensions_dir,
                           **case.settings})


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("kturn_extensions"))


@pytest.fixture(scope="session")
def corpus_results(extensions_dir) -> dict[str, tuple[EvalResult, float]]:
    saved = {k: os.environ.get(k) for k in SECRET_ENV}
    os.environ.update(SECRET_ENV)  # the worker has credentials; the sandbox must not see them

    def run(case: Case):
        reference_src, solution_src = case.sources()
        started = time.monotonic()
        result = evaluate(reference_src, solution_src, settings_for(case, extensions_dir))
        return case.name, (result, time.monotonic() - started)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(pool.map(run, CASES))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_corpus_is_large_enough():
    assert len(CASES) >= 20
    assert all(case.solution_path.is_file() and case.problem_path.is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_verdict(case: Case, corpus_results):
    result, _ = corpus_results[case.name]
    if case.disqualified is None:  # an attack run past the static filter: its own failure is what counts
        got = (result.compiled, result.correct, result.details.get("underlying_error_kind", result.error_kind))
        want = (case.compiled, case.correct, case.error_kind)
    else:
        got = (result.compiled, result.correct, result.disqualified, result.error_kind)
        want = (case.compiled, case.correct, case.disqualified, case.error_kind)
    assert got == want, f"{case.name}: {got} != {want}; error={result.error!r}; flags={result.flags}"
    for flag in case.flags:
        assert flag in result.flags, f"{flag} missing: {result.flags} ({result.details.get('flag_reasons')})"
        assert result.details["flag_reasons"][flag], "every flag carries a reason"
    for flag in case.absent_flags:
        assert flag not in result.flags, f"unexpected {flag}: {result.details['flag_reasons'].get(flag)}"
    for text in case.error_contains:
        assert text in (result.error or ""), f"{text!r} not in error {result.error!r}"
    for key, value in case.details.items():
        assert result.details.get(key) == value, f"details[{key!r}]={result.details.get(key)!r}"
    if case.max_speedup is not None:
        assert result.speedup is not None and result.speedup < case.max_speedup, result.speedup
    if case.error_kind is None:
        assert result.error is None
    else:
        assert result.error and len(result.error) <= 2000


@pytest.mark.parametrize("case", [c for c in CASES if c.timed], ids=lambda c: c.name)
def test_honest_solutions_are_timed(case: Case, corpus_results):
    result, _ = corpus_results[case.name]
    assert result.timing_meaningful
    assert isinstance(result.runtime, Timing) and isinstance(result.baseline, Timing)
    assert result.runtime.trials == result.baseline.trials == BASE_SETTINGS["timing_trials"]
    assert result.runtime.median_ms > 0 and result.runtime.spread_ms >= 0
    assert result.speedup == pytest.approx(result.baseline.median_ms / result.runtime.median_ms)
    assert result.speedup_spread is not None and result.speedup_spread >= 0


def test_triton_on_cpu_is_correctness_only(corpus_results):
    result, _ = corpus_results["honest_triton_relu"]
    assert result.correct and not result.timing_meaningful
    assert result.runtime is None and result.baseline is None and result.speedup is None


def test_speedup_above_threshold_is_rechecked(corpus_results):
    result, _ = corpus_results["speedup_honest"]
    assert "speedup_rechecked" in result.flags
    recheck = result.details["recheck"]
    assert recheck["correct"] and recheck["speedup"] > 2.0
    assert result.speedup <= recheck["speedup"] + 1e-9  # the slower figure is kept


def test_compile_errors_are_mapped_to_solution_lines(corpus_results):
    result, _ = corpus_results["compile_error"]
    first = result.error.splitlines()[0]
    assert first.startswith("solution.py:9 (cpp_sources line 5): error:")
    source_line = BY_NAME["compile_error"].solution_path.read_text().splitlines()[8]
    assert "undefined_variable" in source_line
    assert "compile_log" in result.details and len(result.details["compile_log"]) <= 8000
    assert " -isystem " not in result.details["compile_log"], "command lines are stripped"


def test_incorrect_details_name_the_trial_and_differences(corpus_results):
    details = corpus_results["incorrect_values"][0].details
    assert details["check"] == "values" and details["mismatched"] > 0
    assert details["max_abs_diff"] > 1e-4 and details["examples"]
    example = details["examples"][0]
    assert example["expected"] == 0.0 and example["got"] < 0


def test_every_result_is_json_serialisable_with_provenance(corpus_results):
    for name, (result, _) in corpus_results.items():
        data = json.loads(json.dumps(result.as_dict()))
        assert EvalResult.from_dict(data) == result, name
        fp = result.fingerprint
        for key in ("torch", "python", "harness_version", "cxx", "cpu_model"):
            assert key in fp, (name, key)
        if not result.details.get("not_run") and result.error_kind not in ("compile_error", "backend_mismatch"):
            assert "filesystem_isolated" in fp and "memory_cap" in fp, name
        assert len(fingerprint_key(fp)) == 16
        assert "\x00" not in json.dumps(result.as_dict()), name


def test_sandbox_isolation_took_effect(corpus_results):
    fp = corpus_results["honest_cpp_relu"][0].fingerprint
    assert fp["sandbox"] == "bwrap" and fp["network_isolated"] and fp["pid_namespace"] and fp["filesystem_isolated"]
    assert fp["memory_cap"] is not None and fp["process_cap"].startswith("cgroup-")
    assert "Network is unreachable" in corpus_results["network_access"][0].error
    assert "KeyError: 'DATABASE_URL'" in corpus_results["reads_credentials"][0].error


def test_hostile_error_text_is_stored_clean(corpus_results):
    result, _ = corpus_results["a7_hostile_text"]
    for value in (result.error, result.details["traceback"]):
        assert "\x00" not in value and "\x1b" not in value and len(value) <= 4000
        value.encode("utf-8")  # no lone surrogate
    assert len(result.error) <= 2000 and result.error.rstrip().endswith("end")


def test_calls_are_compared_throughout(corpus_results):
    # every batch compares randomly chosen outputs (within verify_mb_per_batch), any call may be chosen
    for name in ("honest_cpp_relu", "honest_cpp_add"):
        details = corpus_results[name][0].details
        assert details["calls"] > 10 and details["verified_calls"] >= min(details["calls"], 100), (name, details)


def test_builds_are_made_by_the_parent_and_reused(corpus_results):
    builds = [b for name in ("honest_cpp_relu", "stdout_forgery", "a6_compiler_env")
              for b in corpus_results[name][0].details["builds"]]
    assert {b["name"] for b in builds} == {"kturn_corpus_ops"} and all(b["ok"] for b in builds)
    assert len({b["key"] for b in builds}) == 1, "the answer's CXX/CPATH never reach the build or its key"


def test_crashes_hangs_and_escapes_leave_no_process_behind(corpus_results):
    assert corpus_results["leaves_grandchild"][0].error_kind == "timeout"
    time.sleep(0.5)
    survivors = []
    ours = f"KTURN_SANDBOX={os.getpid()}-".encode()  # not those of another test run on the machine
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if ours in environ.read_bytes():
                survivors.append(environ.parent.name)
        except OSError:
            continue
    assert survivors == [], f"sandboxed processes still alive: {survivors}"
    children = [p for p in Path(f"/proc/{os.getpid()}/task").glob("*/children") if p.read_text().strip()]
    assert children == [], "no zombie or running child of the test process"


def test_hang_is_cut_at_the_phase_limit(corpus_results):
    result, wall = corpus_results["infinite_loop"]
    assert result.details["phase"] == "run"
    assert wall < 40, "a 3 s correctness limit must not wait for the 300 s compile limit"


def test_statically_disqualified_solutions_start_no_process(corpus_results):
    for name in ("threads", "timer_tampering", "calls_reference", "a4_triton_calls_torch"):
        result, wall = corpus_results[name]
        assert result.details.get("not_run") and wall < 2, name


def test_nothing_an_evaluation_writes_reaches_the_next(extensions_dir):
    case = BY_NAME["a5_leftovers"]
    for _ in range(2):  # the corpus run left its markers too: none of them may be found
        result = evaluate(*case.sources(), settings_for(case, extensions_dir))
        assert result.correct and not result.error, result.error


def test_a_child_stopped_by_signals_sees_no_input_early(extensions_dir, monkeypatch):
    """Without a cgroup freezer the parent stops every process of the child with SIGSTOP: the
    watcher thread of a2_arena_lookahead still meets each batch's inputs no sooner than forward()."""
    monkeypatch.setattr(Group, "can_freeze", property(lambda group: False))
    case = BY_NAME["a2_arena_lookahead"]
    result = evaluate(*case.sources(), settings_for(case, extensions_dir))
    assert result.correct and result.speedup is not None and result.speedup < case.max_speedup, \
        (result.error, result.speedup)


def test_without_a_freezer_the_same_work_is_timed_alike(extensions_dir, monkeypatch):
    """Without a cgroup freezer the inputs are copied into a child's arena inside its window: the
    copy must cost both children alike (it once cost the reference a first mapping of fresh
    pages, and the reference's own code as the answer came out 5x faster than itself)."""
    monkeypatch.setattr(Group, "can_freeze", property(lambda group: False))
    strict = tuple(f for f in DEFAULT_STRICT_FLAGS if f not in KERNEL_REQUIREMENT_FLAGS)
    settings = EvalSettings(**BASE_SETTINGS, strict_flags=strict, extensions_dir=extensions_dir)
    result = evaluate((PROBLEMS / "big_relu.py").read_text(), (SOLUTIONS / "torch_wrapped_reference.py").read_text(),
                      settings)
    assert result.correct and not result.disqualified, result.error
    # A guard against that 5x bias, not a calibration (bench/bench_evaluation.py measures that): one
    # evaluation on a loaded box has come out at 0.48x.
    assert 1 / 3 < result.speedup < 3, result.speedup


def test_a_build_on_the_first_call_gets_its_own_time_beyond_the_run_limit(extensions_dir):
    """honest_lazy_build compiles in forward(): a build of its own (not in the cache) takes far
    longer than the run limit here, and the batch it happens in is still given that time."""
    case = BY_NAME["honest_lazy_build"]
    reference_src, solution_src = case.sources()
    solution_src = solution_src.replace("#include <algorithm>", "#include <algorithm>\n// a build of its own")
    settings = replace(settings_for(case, extensions_dir), run_timeout_s=2.0)
    result = evaluate(reference_src, solution_src, settings)
    assert result.correct and not result.disqualified, result.error
    build = result.details["builds"][0]
    assert not build["cached"] and build["seconds"] > settings.run_timeout_s, build


def test_a_failed_build_never_poisons_another(extensions_dir):
    """An answer whose extension is named like the honest one but does not compile: the
    honest answer evaluated next still builds (the key covers the sources), and the failure
    is served again only to the identical build."""
    case = BY_NAME["honest_cpp_relu"]
    reference_src, honest = case.sources()
    poisoned = honest.replace("o[i] = in[i] > 0.f ? in[i] : 0.f;", "o[i] = this_does_not_compile;")
    settings = settings_for(case, extensions_dir)
    for _ in range(2):
        failed = evaluate(reference_src, poisoned, settings)
        assert failed.error_kind == "compile_error" and "this_does_not_compile" in failed.error
    assert failed.details["builds"][0]["cached"], "the identical failing build is served from the cache"
    result = evaluate(reference_src, honest, settings)
    assert result.correct and not result.disqualified, result.error


def test_cli_prints_one_json_object(extensions_dir):
    case = BY_NAME["incorrect_values"]
    done = subprocess.run(
        [sys.executable, "-m", "workers.evaluation", "--problem", str(case.problem_path),
         "--solution", str(case.solution_path), "--device", "cpu", "--backend", "cpp", "--timeout", "60",
         "--extensions-dir", extensions_dir, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["error_kind"] == "incorrect" and data["details"]["check"] == "values"


@pytest.mark.parametrize("args", [
    ["--problem", "missing.py", "--solution", "missing.py"],
    ["--problem", str(PROBLEMS / "relu.py"), "--solution", str(PROBLEMS / "relu.py"), "--device", "tpu"],
    ["--problem", str(PROBLEMS / "relu.py"), "--solution", str(PROBLEMS / "relu.py"), "--backend", "cuda"],
])
def test_cli_rejects_unusable_arguments(args):
    done = subprocess.run([sys.executable, "-m", "workers.evaluation", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
