"""`kturn report` and `kturn compare` for people: Rich tables over the dicts of orchestrator.report."""
from __future__ import annotations

from functools import partial
from typing import Any

from rich.console import Group
from rich.table import Table

from orchestrator.report import FINISH_KINDS, FUNNEL_LABELS, PROGRESS
from orchestrator.served_by import served_line


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _funnel_rate(metrics: dict[str, Any], label: str) -> str:
    return _pct(metrics["funnel"][label])


# (header, how to read it off a group's metrics)
COLUMNS: list[tuple[str, Any]] = [
    ("turns", lambda m: str(m["turns"])),
    ("chars (median)", lambda m: _num(m["answer_chars"].get("median"), 4)),
    ("<100", lambda m: _pct(m["answer_chars"].get("short_share"))),
    (">5000", lambda m: _pct(m["answer_chars"].get("long_share"))),
    ("tokens (mean)", lambda m: _num(m["completion_tokens"].get("mean"), 4)),
    ("degen.", lambda m: _pct(m["degenerate_rate"])),
    ("rep. warn.", lambda m: str(m["repetition_warnings"]["turns"])),
    *[(label, partial(_funnel_rate, label=label)) for label in FUNNEL_LABELS.values()],
    ("reward", lambda m: _num(m["mean_reward"])),
    ("return", lambda m: _num(m["mean_return"])),
    ("↑ / = / ↓", lambda m: " / ".join(str(m["progress"][k]) for k in PROGRESS) if any(m["progress"].values()) else "-"),
]


def report_tables(report: dict[str, Any]) -> Group:
    metrics = Table(title=f"run {report['run']} · {report['status']}", caption=served_line(report["served_by"]))
    metrics.add_column("turn")
    for header, _ in COLUMNS:
        metrics.add_column(header, justify="right")
    for row in report["turns"]:
        metrics.add_row(str(row["turn"]), *[read(row) for _, read in COLUMNS])
    metrics.add_row("all", *[read(report["overall"]) for _, read in COLUMNS], style="bold")

    finish = Table(title="how answers ended")
    finish.add_column("turn")
    kinds = list(FINISH_KINDS) + sorted({k for row in report["turns"] for k in row["finish"]} - set(FINISH_KINDS))
    for kind in kinds:
        finish.add_column(kind.replace("_", " "), justify="right")
    for label, group in [*((str(r["turn"]), r) for r in report["turns"]), ("all", report["overall"])]:
        finish.add_row(label, *[str(group["finish"].get(kind, 0)) for kind in kinds])

    trajectories = report["trajectories"]
    progress = trajectories["first_to_last"]
    summary = Table(title="trajectories", show_header=False)
    summary.add_row("count", str(trajectories["count"]))
    summary.add_row("statuses", ", ".join(f"{k} {v}" for k, v in sorted(trajectories["statuses"].items())) or "-")
    summary.add_row("solved (a correct turn)", str(trajectories["solved"]))
    summary.add_row("mean return", _num(trajectories["mean_return"]))
    summary.add_row("last turn vs first", f"improved {progress['improved']}, held {progress['held']}, regressed {progress['regressed']}")
    return Group(metrics, finish, summary)


def compare_table(comparison: dict[str, Any]) -> Group:
    served = comparison["served_by"]
    table = Table(title=f"run {comparison['a']} vs run {comparison['b']}",
                  caption=f"run {comparison['a']}: {served_line(served['a'])}\nrun {comparison['b']}: {served_line(served['b'])}")
    for header in ("metric", f"run {comparison['a']}", f"run {comparison['b']}", "Δ"):
        table.add_column(header, justify="left" if header == "metric" else "right")
    for row in comparison["metrics"]:
        delta = row["delta"]
        table.add_row(row["metric"], _num(row["a"]), _num(row["b"]), "-" if delta is None else f"{delta:+.3g}")
    per_turn = Table(title="per turn: compile and correct rates")
    for header in ("turn", "compiled a", "compiled b", "correct a", "correct b"):
        per_turn.add_column(header, justify="right")
    for row in comparison["per_turn"]:
        per_turn.add_row(str(row["turn"]), _pct(row["a_compiled"]), _pct(row["b_compiled"]), _pct(row["a_correct"]), _pct(row["b_correct"]))
    return Group(table, per_turn)
