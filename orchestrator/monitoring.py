"""kturn's own counters, for a person (`kturn top`) and for Prometheus (`kturn metrics`): runs by
status, the turns of running runs by state, turns whose lease ran out, and messages waiting in
each stage's queue. Flower shows workers and tasks; this shows what only Postgres and the queues know."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kombu.exceptions import ChannelError

from db import reports as report_queries
from db.session import session_scope
from db.turns import db_now
from orchestrator.settings import get_settings
from orchestrator.stages import PREFLIGHT_QUEUE, STAGES

log = logging.getLogger("kturn.monitoring")


@dataclass
class Snapshot:
    runs: dict[str, int] = field(default_factory=dict)  # status → runs
    open_runs: dict[int, dict[str, int]] = field(default_factory=dict)  # running run → turn state → turns
    expired_leases: int = 0
    queues: dict[str, int] | None = None  # stage (and pre-flight) queue → messages waiting; None in embedded mode


def take_snapshot() -> Snapshot:
    settings = get_settings()
    snapshot = Snapshot()
    with session_scope(settings.sqlalchemy_url) as session:
        snapshot.runs = report_queries.runs_by_status(session)
        for run_id, state, count in report_queries.open_runs_turn_states(session):
            snapshot.open_runs.setdefault(run_id, {})[state] = count
        snapshot.expired_leases = report_queries.expired_lease_count(session, db_now(session))
    if not settings.embedded:  # the embedded broker lives inside another process
        snapshot.queues = queue_depths()
    return snapshot


def queue_depths() -> dict[str, int]:
    from orchestrator.app import app

    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for queue in [stage.queue for stage in STAGES] + [PREFLIGHT_QUEUE]:
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
            except ChannelError:  # Redis keeps no key for an empty queue
                depths[queue] = 0
    return depths


class SnapshotCollector:
    """A Prometheus collector that reads a fresh snapshot on every scrape."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("kturn_up", "1 when kturn could read the database and the broker on this scrape")
        started = time.monotonic()
        try:
            snapshot = take_snapshot()
        except Exception as error:  # a scrape reports the outage instead of failing
            log.error("kturn metrics: %s: %s", type(error).__name__, error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        runs = GaugeMetricFamily("kturn_runs", "Runs by status", labels=["status"])
        for status, count in sorted(snapshot.runs.items()):
            runs.add_metric([status], count)
        yield runs
        turns = GaugeMetricFamily("kturn_open_run_turns", "Turns of running runs by state", labels=["run", "state"])
        for run_id, states in sorted(snapshot.open_runs.items()):
            for state, count in sorted(states.items()):
                turns.add_metric([str(run_id), state], count)
        yield turns
        yield GaugeMetricFamily("kturn_expired_leases", "Working turns whose lease ran out (dead worker, reconciler not yet run)", value=snapshot.expired_leases)
        if snapshot.queues is not None:
            queues = GaugeMetricFamily("kturn_queue_messages", "Messages waiting in each stage's queue and the pre-flight queue", labels=["queue"])
            for queue, depth in snapshot.queues.items():
                queues.add_metric([queue], depth)
            yield queues
        yield GaugeMetricFamily("kturn_scrape_seconds", "Time taken to read this scrape", value=time.monotonic() - started)


def serve_metrics(port: int, address: str) -> None:
    """Serve /metrics until interrupted."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector())
    start_http_server(port, addr=address, registry=registry)
    while True:
        time.sleep(3600)
