"""Loaded at interpreter start in every process of bench_orchestration.py (PYTHONPATH), never in
production: counts this process's Postgres and Redis round trips and the CPU each Celery task
takes, and writes them to $KTURN_PROBE_DIR/<pid>.json every half second.

Postgres, counted at the driver (psycopg), so statements sent past SQLAlchemy count too: every
statement is a round trip, and so are BEGIN and COMMIT or ROLLBACK (psycopg 3 sends each on its own)
of a transaction that is not in autocommit; a new connection's start-up is counted apart. Redis: every command or pipeline redis-py sends (kombu's included) is one round trip.
"""
import os

if os.environ.get("KTURN_PROBE_DIR"):
    import atexit
    import json
    import threading
    import time
    from collections import Counter

    COUNTS: Counter = Counter()
    LOCK = threading.Lock()

    def _add(key: str, n: float = 1) -> None:
        with LOCK:
            COUNTS[key] += n

    def _dump() -> None:
        with LOCK:
            snapshot = dict(COUNTS)
        path = os.path.join(os.environ["KTURN_PROBE_DIR"], f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(snapshot, f)
        os.replace(path + ".tmp", path)

    def _dumper() -> None:
        while True:
            time.sleep(0.5)
            _dump()

    def _start() -> None:
        threading.Thread(target=_dumper, daemon=True, name="kturn-probe").start()

    def _forked() -> None:  # a pool child starts from zero: its parent reports its own
        COUNTS.clear()
        _start()

    _start()
    os.register_at_fork(after_in_child=_forked)
    atexit.register(_dump)

    import psycopg
    from psycopg.pq import TransactionStatus

    def _counted(execute):
        def counted(self, *args, **kwargs):
            if not self.connection.autocommit and self.connection.info.transaction_status == TransactionStatus.IDLE:
                _add("pg_begin")  # psycopg opens the transaction with a BEGIN of its own
            _add("pg_statements")
            return execute(self, *args, **kwargs)
        return counted

    def _ending(end, key):
        def ending(self):
            if self.info.transaction_status != TransactionStatus.IDLE:  # with none open, psycopg sends nothing
                _add(key)
            return end(self)
        return ending

    _connect = psycopg.Connection.connect.__func__

    def _counted_connect(cls, *args, **kwargs):
        _add("pg_connects")
        return _connect(cls, *args, **kwargs)

    psycopg.Cursor.execute = _counted(psycopg.Cursor.execute)
    psycopg.Cursor.executemany = _counted(psycopg.Cursor.executemany)
    psycopg.Connection.commit = _ending(psycopg.Connection.commit, "pg_commit")
    psycopg.Connection.rollback = _ending(psycopg.Connection.rollback, "pg_rollback")
    psycopg.Connection.connect = classmethod(_counted_connect)
    psycopg.connect = psycopg.Connection.connect  # the module's name was bound at import; SQLAlchemy calls it

    import redis.connection

    _send = redis.connection.AbstractConnection.send_packed_command

    def _counted_send(self, command, check_health=True):
        _add("redis_round_trips")
        return _send(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = _counted_send

    from celery import signals

    STARTED: dict = {}
    PROFILES: dict = {}  # task name -> cProfile.Profile, with KTURN_PROBE_PROFILE

    @signals.task_prerun.connect
    def _prerun(task_id=None, task=None, **_):
        if os.environ.get("KTURN_PROBE_PROFILE"):
            import cProfile

            PROFILES.setdefault(task.name, cProfile.Profile(time.process_time)).enable()  # CPU, as cpu_ms_per_task
        STARTED[task_id] = time.process_time()

    @signals.task_postrun.connect
    def _postrun(task_id=None, task=None, **_):
        started = STARTED.pop(task_id, None)
        if started is not None:
            _add(f"cpu_s:{task.name}", time.process_time() - started)
            _add(f"tasks:{task.name}")
        if task.name in PROFILES:
            PROFILES[task.name].disable()
            PROFILES[task.name].dump_stats(os.path.join(os.environ["KTURN_PROBE_DIR"], f"{os.getpid()}.{task.name}.pstats"))
