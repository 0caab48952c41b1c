"""Real prefork workers with `-c 2`: each pool process of an evaluate worker runs on cores no other
pool process has (orchestrator/pinning.py), so two evaluations on one host never time their
batches on one core; the pool processes of the other stages, which time nothing, may run on any."""
from __future__ import annotations

import os

import pytest

from orchestrator.pinning import cores_for
from tests.cluster import Cluster, processes, wait_for

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    return [p.pid for p in processes() if p.parent == pid]


def affinities(pids: list[int]) -> list[list[int]]:
    try:
        return sorted(sorted(os.sched_getaffinity(pid)) for pid in pids)
    except ProcessLookupError:
        return []


def pool_of(cluster: Cluster, name: str) -> list[int]:
    return wait_for(lambda: (c := children_of(cluster.processes[name].pid)) and len(c) == 2 and c, 60, "two pool processes")


def test_only_evaluate_pool_processes_run_on_cores_of_their_own(tmp_path, postgres_url, redis_url):
    cluster = Cluster(tmp_path, postgres_url, redis_url)
    try:
        clean = cluster.start_worker("clean", "-c", "2")
        cleaning = pool_of(cluster, clean)
        evaluate = cluster.start_worker("evaluate", "-c", "2")
        cores = sorted(os.sched_getaffinity(0))  # the workers inherit the test's
        expected = sorted(cores_for(i, 2, cores) for i in range(2))
        evaluating = pool_of(cluster, evaluate)
        wait_for(lambda: affinities(evaluating) == expected, 30, f"pool processes pinned to {expected} (they run on {affinities(evaluating)})")
        if len(cores) > 1:
            assert not set(expected[0]) & set(expected[1])
        assert affinities(cleaning) == [cores, cores]
    finally:
        cluster.stop_all()
