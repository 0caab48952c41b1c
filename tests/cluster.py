"""A real kturn cluster for integration tests: Celery workers (one per queue), the SGLang test
double and Flower as separate processes, talking to the real Postgres and Redis."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from orchestrator.problems import BUNDLED_DIR
from orchestrator.stages import BY_WORKING_STATE, STAGES

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(url: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class Cluster:
    def __init__(self, workdir: Path, database_url: str, redis_url: str, lease_seconds: float = 6.0):
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "KTURN_HOME": str(workdir / "home"),
            "KTURN_LEASE_SECONDS": str(lease_seconds),
            "PYTHONPATH": str(ROOT),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.double_url: str | None = None
        _forget_earlier_clusters(database_url, redis_url)

    # -- processes

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        process = subprocess.Popen(args, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()

    def start_double(self, script: dict, *args: str, name: str = "sglang_double", port: int | None = None) -> str:
        """The SGLang test double as its own process; `args` are its options (e.g. --token-rate 400).
        The first one started is `double_url`; `port` starts it again where it was (after an outage)."""
        script_path = self.workdir / f"{name}_script.json"
        script_path.write_text(json.dumps(script))
        port = port or free_port()
        self._spawn(name, [sys.executable, str(ROOT / "tests" / "sglang_double.py"), "--port", str(port), "--script", str(script_path), *args])
        url = f"http://127.0.0.1:{port}"
        self.double_url = self.double_url or url
        wait_for(lambda: "ready" in self.log(name), 30, "the SGLang double")
        return url

    def double_requests(self) -> list[dict]:
        return http_json(f"{self.double_url}/_double/requests")

    def start_worker(self, queue: str, *options: str, wait: bool = True) -> str:
        """A Celery worker for `queue`; `options` replace the default `-c 1` (e.g. "-P", "threads", "-c", "16").
        Evaluate workers get an extension cache of their own, as on a GPU host that shares no
        filesystem with the build hosts: what they load comes through Postgres. `wait`: return
        once it is ready (else at once, as a supervisor restarting it would)."""
        name = f"{queue}-{uuid.uuid4().hex[:6]}"
        env = {**self.env, "KTURN_EXTENSIONS_DIR": str(self.workdir / "evaluate-host-cache")} if queue == "evaluate" else None
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "orchestrator.app", "worker", "-Q", queue, *(options or ("-c", "1")),
                           "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "info"], env=env)
        if wait:
            wait_for(lambda: "ready." in self.log(name), 60, f"the {queue} worker")
        return name

    def start_flower(self, basic_auth: str | None = None) -> str:
        """Flower with `FLOWER_BASIC_AUTH=user:password` when given, else with its API open."""
        port = free_port()
        env = {**self.env, **({"FLOWER_BASIC_AUTH": basic_auth} if basic_auth else {"FLOWER_UNAUTHENTICATED_API": "true"})}
        self._spawn("flower", [sys.executable, "-m", "celery", "-A", "orchestrator.app", "flower", f"--port={port}", "--address=127.0.0.1"], env=env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/healthcheck"), 60, "Flower")
        return url

    @contextmanager
    def stopped(self, queue: str) -> Iterator[None]:
        """No worker takes `queue` inside the block (its messages wait in Redis); one is started again after."""
        for name in [n for n in self.processes if n.startswith(f"{queue}-")]:
            self.kill(name, signal.SIGTERM)
        try:
            yield
        finally:
            self.start_worker(queue)

    def purge(self, queue: str) -> None:
        """Drop the messages waiting in `queue`, as a wiped Redis would (`celery purge`)."""
        subprocess.run([sys.executable, "-m", "celery", "-A", "orchestrator.app", "purge", "-f", "-Q", queue], cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=60)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            stop_group(self.processes.pop(name), grace_s=15)

    # -- the CLI, as a user runs it

    def kturn(self, *args: str, timeout: float = 600, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([str(Path(sys.executable).with_name("kturn")), *args], cwd=ROOT, env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kturn {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def kturn_json(self, *args: str, **kwargs):
        return json.loads(self.kturn(*args, "--json", **kwargs).stdout.strip().splitlines()[-1])


@contextmanager
def started(workdir: Path, database_url: str, redis_url: str, script: dict, *double_args: str) -> Iterator[Cluster]:
    """The SGLang double with `script` (and `double_args`, e.g. "--weight-version", "step-7"), the
    schema, and one worker per queue; all stopped at the end."""
    cluster = Cluster(workdir, database_url, redis_url)
    try:
        cluster.start_double(script, *double_args)
        cluster.kturn("db", "upgrade")
        for stage in STAGES:
            cluster.start_worker(stage.queue)
        yield cluster
    finally:
        cluster.stop_all()


def pool_children(pid: int) -> list[int]:
    """The live processes a worker's main process forked (its pool; a killed one not yet reaped is
    left out)."""
    return [p.pid for p in processes() if p.parent == pid and p.state != "Z"]


def kill_in_the_middle_of_work(db, pools: Callable[[], dict[int, str]], kill: Callable[[int, dict[int, str]], None],
                               tries: int = 20, within_s: float = 60) -> dict:
    """`kill` a pool process of `pools()` (pid -> its worker's name), or its worker, while it holds
    a claim (seen within `within_s`), and return that claim (id, state, claimed_by, attempts,
    holder). Stages take milliseconds, so a kill aimed at a claim just seen often came after the
    work had been stored, tested nothing a clean shutdown would not and cost a worker's restart:
    the holder is stopped (SIGSTOP) first, killed if its claim is still held then, and else let go on."""
    for _ in range(tries):
        pool, claim = wait_for(lambda: claim_held_in(db, pools), within_s, "a claim held by a worker to kill", 0)
        try:
            os.kill(claim["holder"], signal.SIGSTOP)
        except ProcessLookupError:  # ended since (a restarted pool's old process): watch again
            continue
        try:
            if still_held(db, claim):
                kill(claim["holder"], pool)
                return claim
        finally:  # whatever happened, nothing is left stopped (a SIGCONT after the SIGKILL is harmless)
            with suppress(ProcessLookupError):
                os.kill(claim["holder"], signal.SIGCONT)
    raise AssertionError(f"{tries} claims in a row were stored, or their holders gone, before they could be stopped")


def claim_held_in(db, pools: Callable[[], dict[int, str]], watch_s: float = 1.0) -> tuple[dict[int, str], dict] | None:
    """A claim held by a process of `pools()`, with the pools it was seen among, watched for
    `watch_s` on one lookup of the pools: a lookup between seeing the claim and the kill took as
    long as a task, and a lookup made as a killed pool process was being replaced can hold no live
    one, so the pools are looked up again after each watch."""
    pool = wait_for(pools, 60, "the pool processes of the workers to kill", 0.05)
    deadline = time.monotonic() + watch_s
    while time.monotonic() < deadline:
        if claims := claims_held_by(db, list(pool)):
            return pool, claims[0]
        time.sleep(0.002)
    return None


def claims_held_by(db, pids: list[int]) -> list[dict]:
    """The claims held by the processes `pids` (a claim records its holder as host:pid:...)."""
    prefixes = [f"{socket.gethostname()}:{pid}:%" for pid in pids]
    return [{**claim, "holder": int(claim["claimed_by"].split(":")[1])} for claim in
            rows(db, "SELECT id, state, claimed_by, attempts FROM turns WHERE state = ANY(:working) AND claimed_by LIKE ANY(:prefixes)",
                 working=list(BY_WORKING_STATE), prefixes=prefixes)] if pids else []


def still_held(db, claim: dict) -> bool:
    """The claim is still its holder's: the turn neither moved on (stored) nor was claimed again."""
    return bool(rows(db, "SELECT id FROM turns WHERE id = :id AND state = :state AND claimed_by = :claimed_by",
                     id=claim["id"], state=claim["state"], claimed_by=claim["claimed_by"]))


def stop_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM a process's whole group, SIGKILL what is left of it after `grace_s`, and return once
    every process of the group is gone: a pool child outliving its main process could otherwise
    still publish into the next module's broker."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _group_gone(process, grace_s):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _group_gone(process, 30)


def _group_gone(process: subprocess.Popen, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        process.poll()  # reaps the main process
        if not _live_members(process.pid):
            return True
        time.sleep(0.05)
    return False


def _live_members(group: int) -> list[int]:
    """Pids of the group's processes that still run (zombies, which can publish nothing, left out)."""
    return [p.pid for p in processes() if p.group == group and p.state != "Z"]


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    state: str
    parent: int
    group: int


def processes() -> Iterator[ProcessStat]:
    """Every process on the host, from /proc/<pid>/stat (those that exit while it reads are skipped)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, group = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        yield ProcessStat(int(stat.parent.name), state, int(parent), int(group))


def _forget_earlier_clusters(database_url: str, redis_url: str) -> None:
    """Test modules share one database and one broker db: each cluster starts with every run an
    earlier module left running cancelled, and then an empty broker, so that no leftover turn (its
    model server long gone, its config corrupted on purpose) reaches this cluster's workers."""
    import redis
    from sqlalchemy import create_engine, inspect

    from db import runs as run_queries
    from db.session import session_scope
    from orchestrator.settings import to_sqlalchemy_url

    url = to_sqlalchemy_url(database_url)
    engine = create_engine(url)
    try:
        running = []
        if inspect(engine).has_table("runs"):
            with engine.connect() as connection:
                running = connection.execute(text("SELECT id FROM runs WHERE status = 'running'")).scalars().all()
    finally:
        engine.dispose()
    with session_scope(url) as session:
        for run_id in running:
            run_queries.cancel(session, run_id)
    redis.Redis.from_url(redis_url).flushdb()


def run_args(cluster: Cluster, samples: int, turns: int, *extra: str) -> list[str]:
    """`kturn run` on the bundled CPU problems against the double, early stop out of the way."""
    return ["run", str(BUNDLED_DIR), "--samples", str(samples), "--turns", str(turns), "--backend", "cpp", "--device", "cpu",
            "--generator", "sglang", "--url", cluster.double_url, "--early-stop", "100", *extra]


def rows(engine, sql: str, **params) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(text(sql), params)]


def turns_of(engine, run_id: int) -> list[dict]:
    """A run's turns with their problem and trajectory, in problem, sample, turn order."""
    return rows(engine, """
        SELECT p.name AS problem, tr.sample_index, tr.status AS trajectory_status, tr."return" AS trajectory_return, t.*
        FROM turns t JOIN trajectories tr ON tr.id = t.trajectory_id JOIN problems p ON p.id = tr.problem_id
        WHERE tr.run_id = :run ORDER BY p.name, tr.sample_index, t.turn_index""", run=run_id)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
