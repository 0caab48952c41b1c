"""The success metrics of a run, per turn index and overall (pure: rows of the `turn_metrics` view in,
plain dicts out). Whether multi-turn generation is healthy shows in: answer lengths, how answers ended,
degeneracy, the funnel extracted → compiled → correct → faster (fast_1) → 2× faster (fast_2), rewards,
and whether later turns improve on earlier ones."""
from __future__ import annotations

import math
from collections import Counter
from statistics import mean, median
from typing import Any

SHORT_CHARS = 100
LONG_CHARS = 5000
FUNNEL = ("has_code", "compiled", "correct", "fast_1", "fast_2")
FUNNEL_LABELS = {"has_code": "extracted", "compiled": "compiled", "correct": "correct", "fast_1": "fast_1", "fast_2": "fast_2"}
FINISH_KINDS = ("end_of_turn", "stop_string", "length", "loop_abort", "abort")
PROGRESS = ("improved", "held", "regressed")


def build_report(run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`run`: id, status, served_by (model, model_path, weight_version, urls); `rows`: the run's
    `turn_metrics` rows."""
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_turn.setdefault(row["turn_index"], []).append(row)
    return {
        "run": run["id"],
        "status": run["status"],
        "served_by": run["served_by"],
        "overall": group_metrics(rows),
        "turns": [{"turn": index, **group_metrics(turn_rows)} for index, turn_rows in sorted(by_turn.items())],
        "trajectories": trajectory_metrics(rows),
    }


def group_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    evaluated = [r for r in rows if r["compiled"] is not None]
    return {
        "turns": len(rows),
        "states": dict(Counter(r["state"] for r in rows)),
        "answer_chars": length_stats([r["answer_chars"] for r in rows if r["answer_chars"] is not None]),
        "completion_tokens": _stats([r["completion_tokens"] for r in rows if r["completion_tokens"] is not None]),
        "degenerate_rate": _rate(rows, "degenerate"),
        "finish": {kind: n for kind, n in Counter(r["finish_kind"] for r in rows if r["finish_kind"]).items()},
        "repetition_warnings": {
            "turns": sum(1 for r in rows if (r["repetition_warnings"] or 0) > 0),
            "warnings": sum(r["repetition_warnings"] or 0 for r in rows),
        },
        "evaluated": len(evaluated),
        "funnel": {FUNNEL_LABELS[flag]: _rate(evaluated, flag) for flag in FUNNEL},
        "mean_reward": _mean([r["reward"] for r in evaluated if r["reward"] is not None]),
        "mean_return": _mean([r["return"] for r in rows if r["return"] is not None]),
        "progress": {kind: sum(1 for r in rows if r["progress"] == kind) for kind in PROGRESS},
    }


def length_stats(lengths: list[int]) -> dict[str, Any]:
    stats = _stats(lengths)
    if lengths:
        stats["short_share"] = sum(1 for n in lengths if n < SHORT_CHARS) / len(lengths)
        stats["long_share"] = sum(1 for n in lengths if n > LONG_CHARS) / len(lengths)
    return stats


def trajectory_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per trajectory: its status, its return, and whether its last evaluated turn beat its first."""
    trajectories: dict[int, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["trajectory_id"], r["turn_index"])):
        trajectories.setdefault(row["trajectory_id"], []).append(row)
    first_to_last = Counter()
    for turns in trajectories.values():
        rewards = [t["reward"] for t in turns if t["reward"] is not None]
        if len(rewards) >= 2:
            first_to_last[_progress(rewards[0], rewards[-1])] += 1
    return {
        "count": len(trajectories),
        "statuses": dict(Counter(turns[0]["trajectory_status"] for turns in trajectories.values())),
        "mean_return": _mean([turns[0]["trajectory_return"] for turns in trajectories.values() if turns[0]["trajectory_return"] is not None]),
        "first_to_last": {kind: first_to_last[kind] for kind in PROGRESS},
        "solved": sum(1 for turns in trajectories.values() if any(t["correct"] == 1 for t in turns)),
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two reports side by side: every numeric overall figure of each, and b − a."""
    flat_a, flat_b = flatten(a["overall"]), flatten(b["overall"])
    flat_a.update(flatten(a["trajectories"], "trajectories."))
    flat_b.update(flatten(b["trajectories"], "trajectories."))
    keys = [k for k in flat_a if k in flat_b] + [k for k in flat_b if k not in flat_a]
    rows = [{"metric": k, "a": flat_a.get(k), "b": flat_b.get(k), "delta": _delta(flat_a.get(k), flat_b.get(k))} for k in keys]
    per_turn = [
        {"turn": t, **{f"{side}_{label}": _turn(report, t)["funnel"].get(label) if _turn(report, t) else None for side, report in (("a", a), ("b", b)) for label in ("compiled", "correct")}}
        for t in sorted({row["turn"] for row in a["turns"]} | {row["turn"] for row in b["turns"]})
    ]
    return {"a": a["run"], "b": b["run"], "served_by": {"a": a["served_by"], "b": b["served_by"]}, "metrics": rows, "per_turn": per_turn}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric figures as dotted keys (`funnel.correct`); everything else is left out."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def _turn(report: dict[str, Any], index: int) -> dict[str, Any] | None:
    return next((row for row in report["turns"] if row["turn"] == index), None)


def _progress(before: float, after: float) -> str:
    if after > before + 1e-9:
        return "improved"
    return "regressed" if after < before - 1e-9 else "held"


def _rate(rows: list[dict[str, Any]], flag: str) -> float | None:
    known = [r[flag] for r in rows if r[flag] is not None]
    return sum(known) / len(known) if known else None


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(values), "mean": mean(values), "median": median(values), "p90": ordered[math.ceil(0.9 * len(ordered)) - 1], "max": ordered[-1]}


def _mean(values: list[float]) -> float | None:
    return mean(values) if values else None


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a
