"""Workers are back on their queue soon after a restart: none imports torch before it takes tasks.
An evaluate worker's pool process imports it at its first comparison of outputs (a restart under
load took an evaluate worker 4-14 s, most of it torch, while most answers, disqualified by the
static checks or with no code, never need it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster import Cluster, pool_children, wait_for

pytestmark = pytest.mark.integration


def loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_build_and_evaluate_workers_take_tasks_without_importing_torch(tmp_path, postgres_url, redis_url):
    cluster = Cluster(tmp_path, postgres_url, redis_url)
    try:
        for queue in ("build", "evaluate"):
            name = cluster.start_worker(queue)
            main = cluster.processes[name].pid
            pool = wait_for(lambda: pool_children(main), 60, f"the {queue} worker's pool process")
            assert [pid for pid in (main, *pool) if loads_torch(pid)] == [], f"the {queue} worker imported torch at start"
    finally:
        cluster.stop_all()
