"""A real prefork worker with `-c 2`: each pool process runs on cores no other pool process has
(orchestrator/pinning.py), so two evaluations on one host never time their batches on one core."""
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


def test_each_pool_process_of_a_worker_runs_on_cores_of_its_own(tmp_path, postgres_url, redis_url):
    cluster = Cluster(tmp_path, postgres_url, redis_url)
    try:
        name = cluster.start_worker("clean", "-c", "2")
        cores = sorted(os.sched_getaffinity(0))  # the worker inherits the test's
        expected = sorted(cores_for(i, 2, cores) for i in range(2))
        pool = wait_for(lambda: (c := children_of(cluster.processes[name].pid)) and len(c) == 2 and c, 60, "two pool processes")
        wait_for(lambda: affinities(pool) == expected, 30, f"pool processes pinned to {expected} (they run on {affinities(pool)})")
        if len(cores) > 1:
            assert not set(expected[0]) & set(expected[1])
    finally:
        cluster.stop_all()
