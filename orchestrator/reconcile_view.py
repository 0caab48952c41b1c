"""What `kturn reconcile` did and what it is waiting for, in words and as JSON."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from orchestrator.reconciler import ReconcileReport

SHOWN_LEASES = 5


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC


def _seconds_left(report: ReconcileReport, expires_at: datetime) -> float:
    return max(0.0, (_aware(expires_at) - _aware(report.now)).total_seconds())


def _when(report: ReconcileReport, expires_at: datetime) -> str:
    left = round(_seconds_left(report, expires_at))
    return f"{_aware(expires_at).astimezone(timezone.utc):%H:%M:%S} UTC (in {left // 60}m {left % 60:02d}s)"


def reconcile_dict(report: ReconcileReport) -> dict[str, Any]:
    return {"expired": report.expired, "ended_holders": report.ended_holders, "requeued": report.requeued, "failed": report.failed,
            "leased": [{"turn_id": turn_id, "state": state, "lease_expires_at": _aware(expires_at).isoformat(),
                        "expires_in_s": round(_seconds_left(report, expires_at), 1)} for turn_id, state, expires_at in report.leased]}


def reconcile_lines(report: ReconcileReport) -> list[str]:
    requeued = ", ".join(f"turn {turn_id} to {stage}" for stage, turn_id in report.requeued[:SHOWN_LEASES])
    lines = [f"{len(report.expired)} expired lease(s) handed on, {len(report.ended_holders)} claim(s) of ended worker processes handed on, "
             f"{len(report.requeued)} turn(s) re-enqueued"
             + (f" ({requeued}{', ...' if len(report.requeued) > SHOWN_LEASES else ''})" if requeued else "")
             + f", {len(report.failed)} failed"]
    if not report.leased:
        if not (report.expired or report.ended_holders or report.requeued):
            lines.append("nothing to do: no lease ran out and no waiting turn lost its message")
        return lines
    shown = "; ".join(f"turn {turn_id} {state} until {_when(report, expires_at)}" for turn_id, state, expires_at in report.leased[:SHOWN_LEASES])
    last = max(expires_at for _, _, expires_at in report.leased)
    lines.append(f"waiting for {len(report.leased)} lease(s) that still run (their workers may be alive, so they are left alone): "
                 f"{shown}{'; ...' if len(report.leased) > SHOWN_LEASES else ''}")
    lines.append(f"the last runs out at {_when(report, last)}: run `kturn reconcile` again then, or keep it running with --every 60")
    return lines
