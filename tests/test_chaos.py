"""Chaos, short form: a run of 150 trajectories x 3 turns on the real parts (Postgres, Redis, two
prefork workers per queue, the SGLang double, `kturn reconcile --every 1`) while workers are
SIGKILLed (a whole process group and pool children alone, each at an instant it holds a claim;
the main process alone), Redis is flushed, every Postgres connection is cut, every turn in flight is
delivered a second time (what a broker's redelivery does), and workers run pointed at a wrong Redis
port and a wrong Postgres port. At the end every trajectory completed with exactly one row per turn,
its turns contiguous and done, and the model was asked no more often than there are turns plus
retried claims. Then every turn of both runs is delivered once more to every stage, late, and
nothing changes. The time against a fault-free run of the same size is printed."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.stages import BY_WAITING_STATE, BY_WORKING_STATE, STAGES
from tests.cluster import ROOT, Cluster, free_port, kill_in_the_middle_of_work, pool_children, rows, wait_for

pytestmark = pytest.mark.integration

# CI runs the short form, long enough (4-8 s fault-free on 2 cores) that every fault lands while the
# run goes on (the test checks it); KTURN_CHAOS_TRAJECTORIES=1000 measures a run long enough that a
# fault's fixed costs (the reconciler's grace after the flush, workers' start-up) are not most of it.
TRAJECTORIES, TURNS = int(os.environ.get("KTURN_CHAOS_TRAJECTORIES", "150")), 3
# Two workers per queue, one pool process each, as on a cluster of several hosts: a stage whose
# worker is killed keeps a consumer while it restarts.
WORKERS_PER_QUEUE, WORKER_OPTIONS = 2, ("-c", "1")
# Code the evaluate stage disqualifies from its static checks alone (no sandbox to wait for), with
# nothing to build ahead: each turn is claimed by generate, clean and evaluate.
TORCH_ONLY = ("```python\nimport torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
              "    def forward(self, x):\n        return torch.relu(x)\n```\n")
PROBLEM = ROOT / "orchestrator" / "data" / "problems" / "level1" / "1_ReLU.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url):
    cluster = Cluster(tmp_path_factory.mktemp("chaos"), postgres_url, redis_url)
    cluster.env["KTURN_MAX_ATTEMPTS"] = "20"  # a turn killed again and again is still not the model's fault
    try:
        cluster.start_double({"": TORCH_ONLY})
        cluster.kturn("db", "upgrade")
        for stage in STAGES:
            for _ in range(WORKERS_PER_QUEUE):
                cluster.start_worker(stage.queue, *WORKER_OPTIONS)
        cluster._spawn("reconciler", [str(Path(sys.executable).with_name("kturn")), "reconcile", "--every", "1", "--older-than", "3"])
        yield cluster
    finally:
        cluster.stop_all()


def start_run(cluster: Cluster) -> int:
    return cluster.kturn_json("run", str(PROBLEM), "--samples", str(TRAJECTORIES), "--turns", str(TURNS), "--backend", "cpp",
                              "--device", "cpu", "--generator", "sglang", "--url", cluster.double_url, "--early-stop", "100")["run"]


def last_turn_id(db) -> int:
    return rows(db, "SELECT coalesce(max(id), 0) AS id FROM turns")[0]["id"]


def done_turns(db, after: int) -> int:
    """Turns done of those made after turn `after` (the run's: no other run makes turns meanwhile).
    Not counted through a join with their trajectories: on a database never analysed, Postgres
    joined them by a nested loop (2.2 s a count at 2,000 trajectories), and the test's polling of
    the run under chaos took as much CPU as a worker, which the fault-free run's polling did not."""
    return rows(db, "SELECT count(*) AS n FROM turns WHERE id > :after AND state = 'done'", after=after)[0]["n"]


def run_status(db, run_id: int) -> str:
    return rows(db, "SELECT status FROM runs WHERE id = :run", run=run_id)[0]["status"]


def worker_of(cluster: Cluster, queue: str) -> str:
    return next(name for name in cluster.processes if name.startswith(f"{queue}-"))


def pools_of(cluster: Cluster, queue: str) -> dict[int, str]:
    """Each pool process of the queue's workers, with its worker's name."""
    return {child: name for name in [n for n in cluster.processes if n.startswith(f"{queue}-")]
            for child in pool_children(cluster.processes[name].pid)}


def kill_process_group(cluster: Cluster, db, queue: str) -> None:
    def kill(holder: int, pools: dict[int, str]) -> None:
        cluster.kill(pools[holder])
        cluster.start_worker(queue, *WORKER_OPTIONS, wait=False)

    kill_in_the_middle_of_work(db, lambda: pools_of(cluster, queue), kill)


def kill_pool_children(cluster: Cluster, db, queue: str) -> None:
    def kill(holder: int, _pools: dict[int, str]) -> None:
        os.kill(holder, signal.SIGKILL)  # its main process forks another; its task is rejected back to the queue

    kill_in_the_middle_of_work(db, lambda: pools_of(cluster, queue), kill)


def kill_main_process(cluster: Cluster, queue: str) -> None:
    process = cluster.processes.pop(worker_of(cluster, queue))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    cluster.start_worker(queue, *WORKER_OPTIONS, wait=False)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the orphaned pool children, whatever they still hold
    except ProcessLookupError:
        pass


def flush_redis(cluster: Cluster) -> None:
    broker(cluster).flushdb()


def cut_postgres(db) -> None:
    rows(db, "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    db.dispose()  # the test's own pooled connections were cut too


def turns_of(db, *run_ids: int) -> list[dict]:
    return rows(db, """SELECT t.id, t.trajectory_id, t.turn_index, t.state, t.attempts, t.stage_attempts, t.flags, t.reward,
                              t.return AS return_, t.updated_at, tr.status AS trajectory_status
                       FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = ANY(:runs) ORDER BY t.id""",
                runs=list(run_ids))


# A second producer with the workers' settings, started once: a process started per delivery took
# 1-3 s to import Celery, long enough for the run to move past the turns it was to deliver again.
PRODUCER = ("import sys\nfrom orchestrator.queues import enqueue_many\nfrom orchestrator.stages import STAGES\n"
            "print('ready', flush=True)\n"
            "for line in sys.stdin:\n    wanted = [word.split(':') for word in line.split()]\n"
            "    for stage in STAGES:\n        enqueue_many(stage, [int(turn) for name, turn in wanted if name == stage.name])\n"
            "    print(len(wanted), flush=True)\n")
# How long its answer may take: a start, or a batch, plus what each message may take on a loaded
# 2-core box (the late deliveries of a run of 2,000 trajectories are 48,000 messages: over 120 s).
PRODUCER_ANSWER_S, PRODUCER_S_PER_MESSAGE = 120, 0.01


@pytest.fixture(scope="module")
def producer(cluster):
    """The producer, once it has imported Celery (before any run: its start-up is not a fault's)."""
    process = subprocess.Popen([sys.executable, "-c", PRODUCER], cwd=ROOT, env=cluster.env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert answer_of(process) == "ready"
        yield process
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answer_of(producer: subprocess.Popen, messages: int = 0) -> str:
    """The producer's next line, in time for a batch of `messages` (its traceback, if it failed, is
    in the captured stderr)."""
    within = PRODUCER_ANSWER_S + messages * PRODUCER_S_PER_MESSAGE
    ready, _, _ = select.select([producer.stdout], [], [], within)
    assert ready, f"the producer did not answer within {within:.0f} s"
    return producer.stdout.readline().strip()


def deliver(producer: subprocess.Popen, messages: list[tuple[str, int]]) -> None:
    """Enqueue (stage name, turn id) messages from the producer's process."""
    producer.stdin.write(" ".join(f"{name}:{turn_id}" for name, turn_id in messages) + "\n")
    producer.stdin.flush()
    answer = answer_of(producer, len(messages))
    assert answer == str(len(messages)), f"the producer answered {answer!r}"


def deliver_in_flight_again(producer: subprocess.Popen, db, run_id: int) -> None:
    """A second message for every turn not yet done, to the stage it waits for or works in: what a
    broker that redelivers its unacknowledged messages (a restart, a visibility timeout) does."""
    stages = {**BY_WAITING_STATE, **BY_WORKING_STATE}
    deliver(producer, [(stages[t["state"]].name, t["id"]) for t in turns_of(db, run_id) if t["state"] in stages])


def broker(cluster: Cluster):
    import redis

    return redis.Redis.from_url(cluster.env["REDIS_URL"])


def queues_drained(cluster: Cluster, stale: set[bytes]) -> bool:
    """No message queued for a stage and none delivered but unacknowledged except `stale` (those of
    killed workers, which stay until their visibility timeout), twice in a row: a message between
    BRPOP and its record in `unacked` is in neither for an instant."""
    def empty() -> bool:
        return all(broker(cluster).llen(stage.queue) == 0 for stage in STAGES) and set(broker(cluster).hkeys("unacked")) <= stale

    if not empty():
        return False
    time.sleep(0.5)
    return empty()


def start_misconfigured_workers(cluster: Cluster) -> list[str]:
    """A generate worker whose Postgres is a closed port (it takes messages and cannot claim them)
    and a clean worker whose Redis is a closed port (it never gets anything), returned once each is
    up: the fault is their presence during the run, not the CPU their start takes (a second of it
    each, a tenth of the short run's on two cores)."""
    closed = free_port()
    names = []
    for queue, variable, url, up in (("generate", "DATABASE_URL", f"postgresql://postgres@127.0.0.1:{closed}/kturn", "ready."),
                                     ("clean", "REDIS_URL", f"redis://127.0.0.1:{closed}/0", "Cannot connect to redis")):
        name = f"misconfigured-{queue}"
        cluster._spawn(name, [sys.executable, "-m", "celery", "-A", "orchestrator.app", "worker", "-Q", queue, "-c", "1", "-n", f"{name}@%h",
                              "--without-mingle", "--without-gossip", "-l", "info"], env={**cluster.env, variable: url})
        wait_for(lambda: up in cluster.log(name), 60, f"the {name} worker")
        names.append(name)
    return names


def test_a_fault_free_run_and_a_run_under_chaos_both_finish_whole(cluster, producer, db):
    calm_run = start_run(cluster)
    wait_for(lambda: run_status(db, calm_run) != "running", 300, "the fault-free run", 0.2)
    assert_whole(cluster, db, calm_run)

    misconfigured = start_misconfigured_workers(cluster)
    earlier_turns = last_turn_id(db)
    run_id = start_run(cluster)
    faults = [
        (1 / 12, lambda: kill_process_group(cluster, db, "generate")),
        (2.5 / 12, lambda: kill_pool_children(cluster, db, "clean")),
        (4 / 12, lambda: flush_redis(cluster)),
        (5.5 / 12, lambda: cut_postgres(db)),
        (7 / 12, lambda: deliver_in_flight_again(producer, db, run_id)),
        (8.5 / 12, lambda: kill_main_process(cluster, "evaluate")),
    ]
    during = []
    for share, fault in faults:  # each when this share of the turns is done
        threshold = round(share * TRAJECTORIES * TURNS)
        wait_for(lambda: done_turns(db, earlier_turns) >= threshold or run_status(db, run_id) != "running", 300, f"{threshold} turns done", 0.2)
        during.append(run_status(db, run_id) == "running")
        fault()
    for name in misconfigured:
        cluster.kill(name)
    wait_for(lambda: run_status(db, run_id) != "running", 300, "the run under chaos", 0.2)
    calm_s, chaos_s = run_seconds(db, calm_run), run_seconds(db, run_id)
    print(f"\n{TRAJECTORIES} x {TURNS} turns: fault-free {calm_s:.1f} s, under chaos {chaos_s:.1f} s ({chaos_s / calm_s:.2f}x)")
    assert_whole(cluster, db, run_id)
    assert all(during), f"faults that came after the run had ended: {during}"
    assert sum(t["attempts"] - 3 for t in turns_of(db, run_id)) > 0  # the killed claims were claimed again

    finished, asked, stale = turns_of(db, calm_run, run_id), len(cluster.double_requests()), set(broker(cluster).hkeys("unacked"))
    deliver(producer, [(stage.name, t["id"]) for t in finished for stage in STAGES])
    wait_for(lambda: queues_drained(cluster, stale), 300, "the late deliveries", 0.2)
    assert turns_of(db, calm_run, run_id) == finished  # not a column changed, not a claim taken
    assert len(cluster.double_requests()) == asked


def run_seconds(db, run_id: int) -> float:
    """From the run's creation to its end, on the database's clock: the run's own time, not the
    test's (which waits for each restarted worker before it goes on)."""
    return float(rows(db, "SELECT EXTRACT(EPOCH FROM finished_at - created_at) AS s FROM runs WHERE id = :run", run=run_id)[0]["s"])


def assert_whole(cluster: Cluster, db, run_id: int) -> None:
    turns = rows(db, """SELECT t.id, t.trajectory_id, t.turn_index, t.state, t.attempts, t.flags, tr.status AS trajectory_status
                        FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = :run""", run=run_id)
    assert run_status(db, run_id) == "completed"
    by_trajectory = Counter(t["trajectory_id"] for t in turns)
    assert len(by_trajectory) == TRAJECTORIES and set(by_trajectory.values()) == {TURNS}
    for trajectory in by_trajectory:
        assert sorted(t["turn_index"] for t in turns if t["trajectory_id"] == trajectory) == list(range(TURNS))
    assert {t["state"] for t in turns} == {"done"} and {t["trajectory_status"] for t in turns} == {"completed"}
    assert all("no_custom_kernel" in t["flags"] for t in turns)  # each one scored by the evaluate stage
    ids = {f"kturn-turn-{t['id']}" for t in turns}
    requests = [r for r in cluster.double_requests() if r.get("rid") in ids]
    retried_claims = sum(t["attempts"] - 3 for t in turns)  # each turn is claimed once by each of its 3 stages when nothing goes wrong
    assert len(requests) <= len(turns) + retried_claims, (len(requests), len(turns), retried_claims)
