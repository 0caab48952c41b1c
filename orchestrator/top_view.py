"""`kturn top`: the monitoring snapshot as Rich tables."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Group
from rich.table import Table

from db.models import TurnState
from orchestrator.monitoring import Snapshot

STATE_ORDER = [state.value for state in TurnState]


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {**asdict(snapshot), "open_runs": {str(run): states for run, states in snapshot.open_runs.items()}}


def top_tables(snapshot: Snapshot) -> Group:
    summary = Table(title="kturn", show_header=False)
    summary.add_row("runs", ", ".join(f"{status} {count}" for status, count in sorted(snapshot.runs.items())) or "none")
    summary.add_row("expired leases", str(snapshot.expired_leases) + ("  (run `kturn reconcile`)" if snapshot.expired_leases else ""))
    summary.add_row("queues", "embedded (in-process)" if snapshot.queues is None else "  ".join(f"{q} {n}" for q, n in snapshot.queues.items()))
    runs = Table(title="running runs: turns by state")
    runs.add_column("run")
    for state in STATE_ORDER:
        runs.add_column(state, justify="right")
    for run_id, states in sorted(snapshot.open_runs.items()):
        runs.add_row(str(run_id), *[str(states.get(state, 0)) for state in STATE_ORDER])
    return Group(summary, runs)
