"""The limits a run's evaluations get from what pre-flight measured (orchestrator/limits.py)."""
from __future__ import annotations

from orchestrator.limits import memory_limit_for, run_timeout_for
from orchestrator.preflight_checks import CheckedProblem
from orchestrator.problems import ProblemSpec
from workers.evaluation.preflight import ProblemCheck


def checked(**measured) -> CheckedProblem:
    spec = ProblemSpec(name="level1/1_ReLU", level=1, source="", origin="1_ReLU.py")
    return CheckedProblem(spec, ProblemCheck(ok=measured.pop("ok", True), **measured), cached=False, memory_limit_mb=4096)


def test_the_time_limit_is_raised_only_for_a_reference_whose_batch_is_slow():
    fast = [checked(forward_ms=0.2), checked(forward_ms=40.0)]
    assert run_timeout_for(fast, 120.0, 10.0) == 120.0
    slow = fast + [checked(forward_ms=9000.0)]  # a 9 s call: 20x is 180 s
    assert run_timeout_for(slow, 120.0, 10.0) == 180.0
    failed = [checked(ok=False, error="boom", forward_ms=60000.0)]  # a problem that was skipped sets nothing
    assert run_timeout_for(failed, 120.0, 10.0) == 120.0


def test_the_memory_cap_is_twice_the_largest_peak_and_never_below_the_floor():
    assert memory_limit_for([checked(peak_memory_mb=100.0)], 4096) == 4096
    assert memory_limit_for([checked(peak_memory_mb=100.0), checked(peak_memory_mb=3000.5)], 4096) == 6001
    assert memory_limit_for([checked(peak_memory_mb=None)], 4096) == 4096


def test_a_pool_process_pinned_to_one_gpu_still_shares_the_host_memory_with_every_gpus_evaluation(monkeypatch):
    from orchestrator.limits import MIN_MEMORY_LIMIT_MB, default_memory_limit_mb, host_memory_mb, parallel_evaluations

    monkeypatch.setenv("KTURN_GPUS", "0,1,2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # as orchestrator/pinning.py leaves pool process 2
    assert parallel_evaluations("cuda") == 4
    assert default_memory_limit_mb("cuda") == max(MIN_MEMORY_LIMIT_MB, host_memory_mb() // 8)


def test_local_pre_flights_on_cuda_run_one_at_a_time_whatever_the_gpus(monkeypatch):
    """Their children all see this process's CUDA_VISIBLE_DEVICES: two at once would share a GPU."""
    import os

    from orchestrator.preflight_checks import checks_at_once

    monkeypatch.setenv("KTURN_GPUS", "0,1,2,3")
    assert checks_at_once("cuda") == 1
    assert checks_at_once("cpu") == (os.cpu_count() or 1)
