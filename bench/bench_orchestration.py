"""Orchestration throughput on the real parts, against raw Celery measured in the same run.

    python bench/bench_orchestration.py --trajectories 200            # throughput, round trips, CPU per stage
    python bench/bench_orchestration.py --trajectories 200 --profile  # + where each stage's CPU goes (cProfile)
    python bench/bench_orchestration.py --scale 10000                 # 10,000 trajectories enqueued at once

A Redis server of its own (so INFO commandstats counts only this bench), a fresh database on the
Postgres at $KTURN_BENCH_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres), and
one prefork worker per queue (`-c 2`). The answers are replayed and hold no code, so the stages do
almost nothing and what is measured is the orchestration itself.

1. Anchor: a no-op Celery task with kturn's delivery settings (acks late, prefetch 1) on one worker
   `-c 2`: after 300 untimed tasks, tasks/s from the first enqueue of 3,000 until the queue and the
   unacked set are empty.
2. kturn: N trajectories x T turns through `kturn run`, after an untimed run of 10 trajectories:
   turns/s from the run's creation to its last evaluation. Every process (the CLI and the workers, pool children included) loads
   bench/probe/sitecustomize.py, which counts its Postgres round trips (statements, plus BEGIN and
   COMMIT of non-autocommit transactions) and Redis round trips (commands or pipelines sent) and
   the CPU of each task by stage; Redis's own INFO commandstats gives the commands.

The two are timed in turn, `--rounds` times (3), on workers started and warmed up once, the side not
being timed stopped (SIGSTOP); each round's ratio divides kturn's turns/s by the no-op rate measured
just before it, and the bench reports every round and their median (the lower middle one for an even
count). Round trips and CPU per task are summed over kturn's timed runs.
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from orchestrator.stages import STAGES as PIPELINE  # noqa: E402
from tests.cluster import free_port, stop_group, wait_for as wait_until  # noqa: E402  (the tests' helpers for processes)

PROBE = ROOT / "bench" / "probe"
PROBLEM = ROOT / "orchestrator" / "data" / "problems" / "level1" / "1_ReLU.py"
PG_ADMIN_URL = os.environ.get("KTURN_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KTURN = str(Path(sys.executable).with_name("kturn"))
STAGES = tuple(stage.name for stage in PIPELINE)
# Untimed work first, as any timing does: the workers' first tasks connect, compile their
# statements and fill their caches, costs a long-lived worker pays once.
WARM_UP_TASKS = 300
WARM_UP_TRAJECTORIES = 10


class Bench:
    def __init__(self, workdir: Path, concurrency: int, profile: bool):
        self.workdir, self.concurrency, self.profile = workdir, concurrency, profile
        self.processes: list[subprocess.Popen] = []
        port = free_port()
        self._spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.redis = redis.Redis.from_url(self.redis_url)
        wait_until(self._redis_up, 30, "redis-server")
        self.database = f"kturn_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self.database_url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{self.database}"
        self._sql: psycopg.Connection | None = None

    def _redis_up(self) -> bool:
        try:
            return self.redis.ping()
        except redis.ConnectionError:
            return False

    def env(self, probe_dir: Path) -> dict[str, str]:
        probe_dir.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "KTURN_HOME": str(self.workdir / "home"),
                "PYTHONPATH": f"{PROBE}{os.pathsep}{ROOT}", "KTURN_PROBE_DIR": str(probe_dir),
                **({"KTURN_PROBE_PROFILE": "1"} if self.profile else {})}

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def worker(self, app: str, queue: str, env: dict) -> subprocess.Popen:
        name = f"{queue}-{uuid.uuid4().hex[:4]}"
        polling = self._polling()
        process = self._spawn(name, [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "-c", str(self.concurrency),
                                     "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "warning"], env)
        wait_until(lambda: self._polling() > polling, 120, f"the {queue} worker", 0.2)
        return process

    def _polling(self) -> int:
        """Clients blocked in BRPOP: a worker that consumes is one of them once it is ready."""
        return sum(c.get("cmd") == "brpop" for c in self.redis.client_list())

    def stop(self, process: subprocess.Popen) -> None:
        stop_group(process, grace_s=20)

    @contextmanager
    def paused(self, workers: list[subprocess.Popen]) -> Iterator[None]:
        """The workers' process groups stopped (SIGSTOP) inside the block: the side not being timed
        then takes no CPU and sends no command (heartbeats, BRPOP timeouts, event flushes)."""
        for worker in workers:
            os.killpg(worker.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGCONT)

    def close(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)
        if self._sql is not None:
            self._sql.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def commandstats(self) -> Counter:
        return Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in self.redis.info("commandstats").items()})

    def sql(self, query: str, *params):
        """On one connection, kept: the bench polls while it measures, and a connection per poll
        would cost the measured Postgres a backend start each time."""
        if self._sql is None:
            self._sql = psycopg.connect(self.database_url, autocommit=True)
        return self._sql.execute(query, params).fetchall()


def probe_totals(probe_dir: Path) -> Counter:
    total: Counter = Counter()
    for path in probe_dir.glob("*.json"):
        total.update(json.loads(path.read_text()))
    return total


def start_anchor(bench: Bench) -> tuple[subprocess.Popen, object]:
    """The no-op worker, warmed up, and the task to time."""
    worker = bench.worker("bench.noop_app", "noop", bench.env(bench.workdir / "probe-noop"))
    os.environ["REDIS_URL"] = bench.redis_url
    from bench.noop_app import noop

    _noops(bench, noop, WARM_UP_TASKS)
    return worker, noop


def anchor(bench: Bench, noop, tasks: int) -> dict:
    started = time.monotonic()
    _noops(bench, noop, tasks)
    elapsed = time.monotonic() - started
    return {"tasks": tasks, "seconds": round(elapsed, 2), "tasks_per_s": round(tasks / elapsed, 1)}


def _noops(bench: Bench, noop, tasks: int) -> None:
    """Enqueue `tasks` no-op tasks and wait until the queue and the unacked set are empty."""
    with noop.app.producer_or_acquire() as producer:
        for index in range(tasks):
            noop.apply_async((index,), producer=producer)
    wait_until(lambda: bench.redis.llen("noop") == 0 and bench.redis.hlen("unacked") == 0, 600, "the no-op tasks", 0.005)


def replay_file(bench: Bench, turns: int) -> Path:
    path = bench.workdir / "answers.jsonl"
    path.write_text("".join(json.dumps({"problem": "level1/1_ReLU", "turn": k, "text": "No code this time, only words."}) + "\n" for k in range(turns)))
    return path


def run_args(bench: Bench, trajectories: int, turns: int) -> list[str]:
    return [KTURN, "run", str(PROBLEM), "--samples", str(trajectories), "--turns", str(turns), "--backend", "cpp", "--device", "cpu",
            "--generator", "replay", "--replay", str(replay_file(bench, turns)), "--early-stop", "100", "--json"]


def start_kturn_workers(bench: Bench, env: dict) -> list[subprocess.Popen]:
    subprocess.run([KTURN, "db", "upgrade"], env=env, check=True, capture_output=True)
    return [bench.worker("orchestrator.app", queue, env) for queue in STAGES]


class KturnRounds:
    """kturn's workers, warmed up, and what the timed runs on them counted, summed over the runs."""

    def __init__(self, bench: Bench, turns: int):
        self.bench, self.turns = bench, turns
        self.probe_dir = bench.workdir / "probe-kturn"
        self.env = bench.env(self.probe_dir)
        self.workers = start_kturn_workers(bench, self.env)
        _run_to_end(bench, self.env, WARM_UP_TRAJECTORIES, turns)
        time.sleep(1.5)  # every probe writes its counts every half second: the warm-up's are in before the first run
        self.counts: Counter = Counter()
        self.commands: Counter = Counter()
        self.all_turns = 0

    def run(self, trajectories: int) -> dict:
        """One timed run: turns/s from the run's creation to its last evaluation. Between runs the
        workers are only paused (the anchor's turn), so their probes' counts are as the last run left them."""
        counts_before, commands_before = probe_totals(self.probe_dir), self.bench.commandstats()
        run_id = _run_to_end(self.bench, self.env, trajectories, self.turns)
        [(seconds, done, all_turns)] = self.bench.sql("""
            SELECT EXTRACT(EPOCH FROM max(t.evaluated_at) - min(r.created_at)), count(*) FILTER (WHERE t.state = 'done'), count(*)
            FROM runs r JOIN trajectories tr ON tr.run_id = r.id JOIN turns t ON t.trajectory_id = tr.id WHERE r.id = %s""", run_id)
        time.sleep(1.5)  # the run's last counts written
        self.counts.update(probe_totals(self.probe_dir) - counts_before)
        self.commands.update(self.bench.commandstats() - commands_before)
        self.all_turns += all_turns
        return {"trajectories": trajectories, "turns": all_turns, "done": done, "seconds": round(float(seconds), 2),
                "turns_per_s": round(all_turns / float(seconds), 1)}

    def costs(self) -> dict:
        """Round trips per turn and CPU per task over every timed run."""
        counts, commands = self.counts, self.commands
        per_turn = lambda n: round(n / self.all_turns, 2)  # noqa: E731
        pg = counts["pg_statements"] + counts["pg_begin"] + counts["pg_commit"] + counts["pg_rollback"]
        result = {
            "pg_round_trips_per_turn": per_turn(pg),
            "pg_per_turn": {k: per_turn(counts[k]) for k in ("pg_statements", "pg_begin", "pg_commit", "pg_rollback", "pg_connects")},
            "redis_round_trips_per_turn": per_turn(counts["redis_round_trips"]),
            "redis_commands_per_turn": per_turn(sum(commands.values()) - commands["info"] - commands["client|list"] - commands["llen"] - commands["hlen"]),
            "redis_commands_by_name_per_turn": {k: per_turn(v) for k, v in commands.most_common(12)},
            "cpu_ms_per_task": {stage: round(1000 * counts[f"cpu_s:kturn.{stage}"] / max(counts[f"tasks:kturn.{stage}"], 1), 2) for stage in STAGES},
        }
        if self.bench.profile:
            result["profile"] = {stage: top_functions(self.probe_dir, stage) for stage in STAGES}
        return result


def compare(bench: Bench, trajectories: int, turns: int, noop_tasks: int, rounds: int) -> dict:
    """The anchor and kturn in turn, `rounds` times: the box's speed drifts between runs (by up to
    2x on a shared host), and a ratio of two neighbouring runs is the one that compares."""
    anchor_worker, noop = start_anchor(bench)
    with bench.paused([anchor_worker]):
        kturn = KturnRounds(bench, turns)
    measured = []
    for _ in range(rounds):
        with bench.paused(kturn.workers):
            raw = anchor(bench, noop, noop_tasks)
        with bench.paused([anchor_worker]):
            run = kturn.run(trajectories)
        measured.append({"raw_tasks_per_s": raw["tasks_per_s"], "turns_per_s": run["turns_per_s"], "done": run["done"], "turns": run["turns"],
                         "ratio": round(run["turns_per_s"] / raw["tasks_per_s"], 3)})
    return {"trajectories": trajectories, "turns": turns, "noop_tasks": noop_tasks, "rounds": measured, "kturn": kturn.costs(),
            "ratio_to_raw": statistics.median_low(m["ratio"] for m in measured)}


def _run_to_end(bench: Bench, env: dict, trajectories: int, turns: int) -> int:
    """`kturn run` of `trajectories` x `turns`, waited for until it ends; its id."""
    run_id = json.loads(subprocess.run(run_args(bench, trajectories, turns), env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])["run"]
    wait_until(lambda: bench.sql("SELECT status FROM runs WHERE id = %s", run_id)[0][0] != "running", 1800, "the run", 0.1)
    return run_id


def top_functions(probe_dir: Path, stage: str, limit: int = 15) -> list[str]:
    files = [str(p) for p in probe_dir.glob(f"*.kturn.{stage}.pstats")]
    if not files:
        return []
    stats = pstats.Stats(*files)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:limit]  # by own time
    total = sum(v[2] for v in stats.stats.values())
    return [f"{100 * tt / total:5.1f}%  {func[2]}  {Path(func[0]).name}:{func[1]}" for func, (_cc, _nc, tt, _ct, _callers) in rows]


def scale(bench: Bench, trajectories: int, drain_s: float) -> dict:
    """10,000 trajectories at once: the time to create and enqueue them, what they cost Redis and
    Postgres, the rate while draining, and what a reconcile pass and a status read cost then."""
    probe_dir = bench.workdir / "probe-scale"
    env = bench.env(probe_dir)
    subprocess.run([KTURN, "db", "upgrade"], env=env, check=True, capture_output=True)
    redis_before = bench.redis.info("memory")["used_memory"]
    pg_before = bench.sql("SELECT pg_database_size(current_database())")[0][0]
    started = time.monotonic()
    run_id = json.loads(subprocess.run(run_args(bench, trajectories, 3), env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])["run"]
    create_and_enqueue_s = time.monotonic() - started
    queued = bench.redis.llen("generate")
    redis_after = bench.redis.info("memory")["used_memory"]
    pg_after = bench.sql("SELECT pg_database_size(current_database())")[0][0]
    for queue in STAGES:
        bench.worker("orchestrator.app", queue, env)
    done_before = _done(bench, run_id)
    window_start = time.monotonic()
    time.sleep(drain_s)
    drained = _done(bench, run_id) - done_before
    window = time.monotonic() - window_start
    reconcile_s = _timed([KTURN, "reconcile", "--json"], env)
    runs_s = _timed([KTURN, "runs", "--json"], env)
    subprocess.run([KTURN, "cancel", str(run_id)], env=env, check=True, capture_output=True)
    return {
        "trajectories": trajectories, "create_and_enqueue_s": round(create_and_enqueue_s, 2), "messages_queued": queued,
        "redis_memory_mb": round((redis_after - redis_before) / 2**20, 1), "postgres_growth_mb": round((pg_after - pg_before) / 2**20, 1),
        "drain_turns_per_s": round(drained / window, 1), "drain_window_s": round(window, 1),
        "reconcile_pass_s": round(reconcile_s, 2), "kturn_runs_s": round(runs_s, 2),
    }


def _done(bench: Bench, run_id: int) -> int:
    return bench.sql("""SELECT count(*) FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id
                        WHERE tr.run_id = %s AND t.state = 'done'""", run_id)[0][0]


def _timed(args: list[str], env: dict) -> float:
    started = time.monotonic()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--noop-tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="anchor and kturn measured in turn this many times; the ratio is their median")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile every task (slows them: rates are then not comparable)")
    parser.add_argument("--scale", type=int, default=0, help="instead: enqueue this many trajectories at once and drain a while")
    parser.add_argument("--drain-seconds", type=float, default=60)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    bench = Bench(Path(tempfile.mkdtemp(prefix="kturn-bench-")), args.concurrency, args.profile)
    try:
        if args.scale:
            report = {"scale": scale(bench, args.scale, args.drain_seconds)}
        else:
            report = compare(bench, args.trajectories, args.turns, args.noop_tasks, args.rounds)
    finally:
        bench.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
