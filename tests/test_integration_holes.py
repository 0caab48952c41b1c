"""Ways a turn could be lost, held up or taken from a live worker, each reproduced on the real parts
(Postgres, Redis, a Celery worker where one is needed): a dead worker's unacknowledged message, a
turn that cannot even be loaded, a lease renewed while the reconciler acts on it, leases renewed
by one thread per process and let go when their work ends, a worker whose database is unreachable,
and a claim whose process has ended while its lease still runs."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import turns as turn_queries
from db.models import TurnState
from db.session import session_scope
from orchestrator.broker_queue import message_turn
from orchestrator.heartbeat import LeaseKeeper
from orchestrator.problems import BUNDLED_DIR
from orchestrator.settings import to_sqlalchemy_url
from orchestrator.stages import CLEAN, GENERATE
from tests.cluster import Cluster, free_port, rows, wait_for

pytestmark = pytest.mark.integration

REPLAY = BUNDLED_DIR.parent / "demo_answers.jsonl"

# A consumer takes a message the way a Celery worker does (delivered, not yet acknowledged: it sits
# in kombu's `unacked` hash) and is SIGKILLed before it could claim the turn.
TAKE_AND_DIE = """
import os, signal, sys
from kombu import Connection
with Connection(sys.argv[1]) as connection:
    connection.SimpleQueue("generate").get(timeout=30)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, redis_url):
    """The schema and the CLI, no workers: each test starts what it needs."""
    cluster = Cluster(tmp_path_factory.mktemp("holes"), postgres_url, redis_url)
    cluster.kturn("db", "upgrade")
    try:
        yield cluster
    finally:
        cluster.stop_all()


def new_run(cluster: Cluster, db) -> tuple[int, int]:
    """A one-turn replay run on one problem: (run id, its pending turn's id, enqueued for generation)."""
    run_id = cluster.kturn_json("run", str(BUNDLED_DIR), "--id", "1", "--turns", "1", "--backend", "cpp", "--device", "cpu",
                                "--generator", "replay", "--replay", str(REPLAY))["run"]
    [turn] = rows(db, "SELECT t.id FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id WHERE tr.run_id = :run", run=run_id)
    return run_id, turn["id"]


def turn_row(db, turn_id: int) -> dict:
    return rows(db, "SELECT t.*, tr.status AS trajectory_status, r.status AS run_status FROM turns t "
                    "JOIN trajectories tr ON tr.id = t.trajectory_id JOIN runs r ON r.id = tr.run_id WHERE t.id = :id", id=turn_id)[0]


def test_a_dead_workers_unacked_message_does_not_hide_a_lost_turn(cluster, db, redis_url):
    import redis

    run_id, turn_id = new_run(cluster, db)
    subprocess.run([sys.executable, "-c", TAKE_AND_DIE, redis_url], timeout=60)
    client = redis.Redis.from_url(redis_url)
    assert client.llen("generate") == 0 and client.hlen("unacked") == 1  # Redis keeps it for the visibility timeout
    time.sleep(1.5)
    report = cluster.kturn_json("reconcile", "--older-than", "1")
    assert ["generate", turn_id] in report["requeued"]
    queued = [message_turn(m) for m in client.lrange("generate", 0, -1)]
    assert queued.count((GENERATE.task_name, turn_id)) == 1, queued
    cluster.kturn("cancel", str(run_id))


def test_reconciler_never_takes_over_a_lease_renewed_after_it_looked(cluster, db, postgres_url):
    run_id, turn_id = new_run(cluster, db)
    url = to_sqlalchemy_url(postgres_url)
    with session_scope(url) as session:  # a worker's claim, whose lease then runs out
        claim = turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "worker", 0.2)
    time.sleep(0.5)
    with Session(db) as worker:
        # The worker renews its lease, and the renewal's transaction holds the row while the
        # reconciler, which saw the lease expired, tries to hand the turn on.
        assert turn_queries.extend_lease(worker, claim, 60)
        reconciler = threading.Thread(target=lambda: results.append(cluster.kturn_json("reconcile", "--older-than", "3600")))
        results: list[dict] = []
        reconciler.start()
        wait_for(lambda: rows(db, "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock'")[0]["n"], 60, "the reconciler to wait on the renewal", 0.05)
        worker.commit()
    reconciler.join(60)
    assert turn_id in results[0]["expired"]  # it looked while the lease was expired ...
    assert ["generate", turn_id] not in results[0]["requeued"]  # ... and left the renewed lease alone
    turn = turn_row(db, turn_id)
    assert (turn["state"], turn["attempts"], turn["claimed_by"]) == ("generating", 1, "worker")
    cluster.kturn("cancel", str(run_id))


def test_one_thread_keeps_every_lease_of_its_process_and_lets_go_of_each_when_its_work_ends(cluster, db, postgres_url, caplog):
    url, lease = to_sqlalchemy_url(postgres_url), 1.5  # renewed every 0.5 s: a stall of a loaded box is not a lost lease
    runs, claims = [], []
    for _ in range(3):
        run_id, turn_id = new_run(cluster, db)
        with session_scope(url) as session:
            claims.append(turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "worker", lease))
        runs.append(run_id)
    leased = lambda claim: rows(db, "SELECT lease_expires_at > now() AS leased FROM turns WHERE id = :id", id=claim.turn_id)[0]["leased"]  # noqa: E731
    keeper = LeaseKeeper()
    with keeper.holding(url, claims[0], lease), keeper.holding(url, claims[1], lease), keeper.holding(url, claims[2], lease):
        with session_scope(url) as session:  # the reconciler hands the third on: its renewals stop
            assert turn_queries.release_claim(session, claims[2], TurnState.pending)
        time.sleep(4 * lease)
        assert leased(claims[0]) and leased(claims[1])
        assert [t.name for t in threading.enumerate()].count("lease-keeper") == 1
        assert "lease lost" in caplog.text and f"turn {claims[2].turn_id}" in caplog.text
    # A renewal already under way as the block ended may extend a lease once more, by a lease at most.
    wait_for(lambda: not leased(claims[0]) and not leased(claims[1]), 3 * lease, "the leases to run out once nobody holds them")
    for run_id in runs:
        cluster.kturn("cancel", str(run_id))


def test_a_turn_that_cannot_be_loaded_fails_after_max_attempts_with_the_error(cluster, db):
    with cluster.stopped("generate"):
        run_id, turn_id = new_run(cluster, db)
        with db.begin() as connection:  # a config this worker's version rejects
            connection.exec_driver_sql("UPDATE runs SET config = jsonb_set(config, '{max_turns}', '\"many\"') WHERE id = %s", (run_id,))
    turn = wait_for(lambda: (t := turn_row(db, turn_id))["state"] == "failed" and t, 60, "the unreadable turn to fail")
    assert "loading the turn failed" in turn["error"] and "max_turns" in turn["error"]
    assert turn["attempts"] == 3 and "generate failed 3 times" in turn["error"]  # KTURN_MAX_ATTEMPTS claims, each counted
    assert turn["trajectory_status"] == "failed" and turn["run_status"] != "running"


# Two deliveries of one turn to a worker whose database is a closed port, as `run_stage` gets them.
CLAIM_WITHOUT_DATABASE = """
import logging, sys
from sqlalchemy.exc import OperationalError
from orchestrator.pipeline import run_stage
from orchestrator.stages import GENERATE
logging.basicConfig(level=logging.WARNING, format="%(message)s")
for _ in range(2):
    try:
        run_stage(GENERATE, int(sys.argv[1]), work=None)
    except OperationalError:
        print("raised", file=sys.stderr)
"""


def test_a_worker_that_cannot_reach_its_database_hands_the_message_back_before_it_backs_off(cluster, db, redis_url):
    import redis

    with cluster.stopped("generate"):
        run_id, turn_id = new_run(cluster, db)
        client = redis.Redis.from_url(redis_url)
        client.delete("generate")  # the run's own message: the deliveries below stand for it
        env = {**cluster.env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/kturn"}
        result = subprocess.run([sys.executable, "-c", CLAIM_WITHOUT_DATABASE, str(turn_id)], env=env, capture_output=True, text=True, timeout=60)
        back = f"turn {turn_id}: claiming for generate failed, so its message is back on the queue"
        log = ["back" if line.startswith(back) else line for line in result.stderr.splitlines() if line.startswith(("turn ", "this worker", "raised"))]
        assert log == ["back", "this worker waits 0.25 s before its next message", "raised",
                       "back", "this worker waits 0.5 s before its next message", "raised"], result.stderr
        queued = [message_turn(m) for m in client.lrange("generate", 0, -1)]
        assert queued == [(GENERATE.task_name, turn_id)] * 2  # each delivery back on the queue, for a worker whose database answers
    turn = wait_for(lambda: (t := turn_row(db, turn_id))["generated_at"] and t, 60, "a worker that reaches the database to generate it")
    assert turn["attempts"] >= 1 and turn["error"] is None
    cluster.kturn("cancel", str(run_id))


# A process that says who it is (as a claim records it), then waits to be killed.
HOLDER = """
import sys
from orchestrator.process_identity import this_process
print(this_process(), flush=True)
sys.stdin.read()
"""

# A delivery of the turn to a worker, as `run_stage` gets it.
DELIVER = """
import sys
from orchestrator.pipeline import run_stage
from orchestrator.stages import GENERATE
run_stage(GENERATE, int(sys.argv[1]), work=None)
"""


def claimed_by_a_process_that_ends(cluster, db, postgres_url) -> tuple[int, int, subprocess.Popen]:
    """A run whose turn is claimed, with an hour's lease, by a live process of this host."""
    run_id, turn_id = new_run(cluster, db)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=cluster.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with session_scope(to_sqlalchemy_url(postgres_url)) as session:
        assert turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, holder.stdout.readline().strip(), 3600)
    return run_id, turn_id, holder


def test_the_reconciler_hands_on_a_claim_whose_process_ended_without_waiting_for_its_lease(cluster, db, postgres_url):
    with cluster.stopped("generate"):
        run_id, turn_id, holder = claimed_by_a_process_that_ends(cluster, db, postgres_url)
        other_run, elsewhere = new_run(cluster, db)
        with db.begin() as connection:  # a claim of another machine: this host cannot judge it
            connection.execute(text("UPDATE turns SET state = 'generating', attempts = 1, stage_attempts = 1, claimed_by = 'elsewhere:1:0123456789abcdef0123456789abcdef:4026531836:1', "
                                    "lease_expires_at = now() + interval '1 hour' WHERE id = :id"), {"id": elsewhere})
        alive = cluster.kturn_json("reconcile", "--older-than", "3600")
        assert alive["ended_holders"] == [] and turn_row(db, turn_id)["state"] == "generating"
        said = cluster.kturn("reconcile", "--older-than", "3600").stdout  # what it waits for, and until when
        assert "lease(s) that still run" in said and f"turn {turn_id} generating until" in said and "UTC (in 59m" in said, said
        holder.kill()
        holder.wait()
        ended = cluster.kturn_json("reconcile", "--older-than", "3600")
        assert ended["ended_holders"] == [turn_id] and ["generate", turn_id] in ended["requeued"]
        turn = turn_row(db, turn_id)
        assert (turn["state"], turn["claimed_by"], turn["attempts"]) == ("pending", None, 1)
        assert turn_row(db, elsewhere)["state"] == "generating"
    cluster.kturn("cancel", str(run_id))
    cluster.kturn("cancel", str(other_run))


def test_a_redelivered_message_hands_on_a_claim_whose_process_ended(cluster, db, postgres_url, redis_url):
    import redis

    with cluster.stopped("generate"):
        run_id, turn_id, holder = claimed_by_a_process_that_ends(cluster, db, postgres_url)
        client = redis.Redis.from_url(redis_url)
        client.delete("generate")
        subprocess.run([sys.executable, "-c", DELIVER, str(turn_id)], env=cluster.env, check=True, timeout=60)
        assert turn_row(db, turn_id)["state"] == "generating" and client.llen("generate") == 0  # a live holder keeps its turn
        holder.kill()
        holder.wait()
        subprocess.run([sys.executable, "-c", DELIVER, str(turn_id)], env=cluster.env, check=True, timeout=60)
        turn = turn_row(db, turn_id)
        assert (turn["state"], turn["claimed_by"]) == ("pending", None)
        assert [message_turn(m) for m in client.lrange("generate", 0, -1)] == [(GENERATE.task_name, turn_id)]
    cluster.kturn("cancel", str(run_id))


# A delivery whose work ends by cutting its own process's other connections to the database (its
# pooled one included; PGAPPNAME names them), as a terminated backend or a restart already over would.
CUT_BEFORE_STORE = """
import sys
import psycopg
from orchestrator.pipeline import Outcome, run_stage
from orchestrator.stages import GENERATE

def work(context):
    with psycopg.connect(sys.argv[2], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'kturn-cut-store' AND pid <> pg_backend_pid()")
    return Outcome(values={"raw_response": "written before the cut"})

run_stage(GENERATE, int(sys.argv[1]), work)
"""


def test_a_store_cut_by_a_terminated_connection_is_tried_again_on_a_fresh_one(cluster, db, postgres_url, redis_url):
    import redis

    with cluster.stopped("generate"):
        run_id, turn_id = new_run(cluster, db)
        client = redis.Redis.from_url(redis_url)
        client.delete("generate", "clean")
        result = subprocess.run([sys.executable, "-c", CUT_BEFORE_STORE, str(turn_id), postgres_url], env={**cluster.env, "PGAPPNAME": "kturn-cut-store"},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"turn {turn_id}: storing its generate result failed, trying once more" in result.stderr
        turn = turn_row(db, turn_id)
        assert (turn["state"], turn["raw_response"], turn["attempts"]) == ("generated", "written before the cut", 1)
        assert [message_turn(m) for m in client.lrange("clean", 0, -1)] == [(CLEAN.task_name, turn_id)]
    cluster.kturn("cancel", str(run_id))
